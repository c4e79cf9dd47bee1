"""The session repo on another Redis topology: same definitions, data and registry."""

from __future__ import annotations

import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from service.app import create_app
from service.settings import Settings
from tests.service.conftest import AppClient, Repo, columns


def app_on(repo: Repo, path: Path, online_store: dict[str, Any]) -> AppClient:
    """A service on a copy of ``repo`` whose ``online_store`` section is replaced."""
    path.mkdir()
    shutil.copy(repo.path / "definitions.py", path / "definitions.py")
    shutil.copytree(repo.path / "data", path / "data", ignore=shutil.ignore_patterns("*.db"))
    config = yaml.safe_load((repo.path / "feature_store.yaml").read_text())
    config["online_store"] = {"type": "online_store.store.FastRedisOnlineStore", **online_store}
    (path / "feature_store.yaml").write_text(yaml.safe_dump(config))
    # Same registry as the session repo: only the online store differs.
    return AppClient(create_app(Settings(repo_path=path, registry_url=repo.registry_url)))


def materialize_and_read_customers(app: AppClient, repo: Repo) -> list[str]:
    """Materialize ``customer_profile`` through ``/materialize``, then check lookups of 30
    customers against the source's latest rows; returns the customers read."""
    window = {
        "start_ts": (repo.end - timedelta(days=400)).isoformat(),
        "end_ts": (repo.end + timedelta(seconds=1)).isoformat(),
        "feature_views": ["customer_profile"],
    }
    job = app.post("/materialize", json=window).json()
    deadline = time.monotonic() + 90
    while (state := app.get(f"/materialize/{job['job_id']}").json()["state"]) not in (
        "succeeded",
        "failed",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert state == "succeeded"
    latest = repo.latest("customer_profile", ["customer_id"])
    customers = sorted(k[0] for k in latest)[:30]
    resp = app.post(
        "/get-online-features",
        json={"entities": {"customer_id": customers},
              "features": ["customer_profile:membership_tier"]},
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    tiers = columns(resp.json())["membership_tier"]["values"]
    assert tiers == [latest[(c,)]["membership_tier"] for c in customers]
    return customers
