"""``--workers N``: N processes behind one port, jobs visible from every worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx

from online_store.embedded import free_port
from tests.service.conftest import ROOT, Repo


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids.update(int(k) for k in text)
    return kids


def test_two_workers_serve_and_share_job_state(repo: Repo, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTORE_")}
    env.update(
        PYTHONPATH=str(ROOT),
        FEATURESTORE_REPO_PATH=str(repo.path),
        FEATURESTORE_REDIS_URL=repo.redis_url,
        FEATURESTORE_REGISTRY_URL=repo.registry_url,
    )
    cmd = [sys.executable, "-m", "service.cli", "serve", "--repo", str(repo.path)]
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), "--workers", "2"], env=env, stdout=log, stderr=log
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.3)
        workers = _children(proc.pid)
        assert len(workers) >= 2

        body = {
            "entities": {"driver_id": [1001, 1002]},
            "features": ["driver_hourly_stats:conv_rate"],
        }
        for _ in range(30):  # new connection each time: the kernel spreads them
            assert httpx.post(f"{base}/get-online-features", json=body).status_code == 200

        window = {
            "start_ts": (repo.end - timedelta(days=400)).isoformat(),
            "end_ts": (repo.end + timedelta(seconds=1)).isoformat(),
            "feature_views": ["driver_customer_stats"],
        }
        job = httpx.post(f"{base}/materialize", json=window, timeout=30).json()
        # Whichever worker answers knows the job and refuses a second one for the view.
        for _ in range(10):
            resp = httpx.get(f"{base}/materialize/{job['job_id']}")
            assert resp.status_code == 200
        states = set()
        deadline = time.monotonic() + 90
        while True:
            state = httpx.get(f"{base}/materialize/{job['job_id']}").json()["state"]
            states.add(state)
            if state in ("succeeded", "failed"):
                break
            second = httpx.post(f"{base}/materialize", json=window, timeout=30)
            if second.status_code == 202:  # the first finished between the two calls
                break
            assert second.status_code == 409
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert "failed" not in states
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
