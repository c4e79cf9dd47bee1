"""The service on Redis Sentinel (``redis_type: redis_sentinel``): redis-py finds the master."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import yaml

from online_store.embedded import find_redis_server, free_port
from service.app import create_app
from service.settings import Settings
from tests.service.conftest import AppClient, Repo, columns


def _wait_ping(client: redis.Redis, deadline: float) -> None:
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis did not start"
            time.sleep(0.02)


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A master and one sentinel monitoring it as ``mymaster``: (master port, sentinel port)."""
    master, watcher = free_port(), free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {watcher}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master} 1\n"
    )
    server = find_redis_server()
    procs = [
        subprocess.Popen(
            [server, "--port", str(master), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
        ),
        subprocess.Popen([server, str(config), "--sentinel"], stdout=subprocess.DEVNULL),
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        _wait_ping(redis.Redis(port=master), deadline)
        watch = redis.Redis(port=watcher, decode_responses=True)
        _wait_ping(watch, deadline)
        while watch.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster") is None:
            assert time.monotonic() < deadline, "sentinel does not know the master"
            time.sleep(0.05)
        yield master, watcher
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_lookups_writes_and_jobs_through_sentinel(
    repo: Repo, tmp_path: Path, sentinel: tuple[int, int]
) -> None:
    master, watcher = sentinel
    path = tmp_path / "sentinel-repo"
    path.mkdir()
    shutil.copy(repo.path / "definitions.py", path / "definitions.py")
    shutil.copytree(repo.path / "data", path / "data", ignore=shutil.ignore_patterns("*.db"))
    config = yaml.safe_load((repo.path / "feature_store.yaml").read_text())
    # Feast's Sentinel form: the connection string lists the sentinels, not the master.
    config["online_store"] = {
        "type": "online_store.store.FastRedisOnlineStore",
        "redis_type": "redis_sentinel",
        "sentinel_master": "mymaster",
        "connection_string": f"127.0.0.1:{watcher}",
    }
    (path / "feature_store.yaml").write_text(yaml.safe_dump(config))
    app = AppClient(create_app(Settings(repo_path=path, registry_url=repo.registry_url)))
    try:
        assert app.get("/ready").status_code == 200
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
        write = app.post(
            "/write-to-online-store",
            json={
                "feature_view_name": "driver_customer_stats",
                "df": {"driver_id": [930001], "customer_id": ["c_sentinel"],
                       "event_timestamp": [repo.end.isoformat()], "trips_together": [3],
                       "avg_tip": [2.5], "last_rating": [5]},
            },
        )  # fmt: skip
        assert write.status_code == 200, write.text
        resp = app.post(
            "/get-online-features",
            json={"entities": {"driver_id": [930001], "customer_id": ["c_sentinel"]},
                  "features": ["driver_customer_stats:avg_tip"]},
        )  # fmt: skip
        assert columns(resp.json())["avg_tip"]["values"] == [2.5]
        # Everything went to the master Sentinel named; the sentinel holds no data.
        assert redis.Redis(port=master).dbsize() > len(customers)
    finally:
        app.close()
