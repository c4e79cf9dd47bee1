"""``--workers N``: N processes behind one port, jobs visible from every worker."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import httpx

from tests.service.conftest import Repo, ServeProcess


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids.update(int(k) for k in text)
    return kids


def test_two_workers_serve_and_share_job_state(repo: Repo, tmp_path: Path) -> None:
    server = ServeProcess(repo, tmp_path / "serve.log", "--workers", "2")
    try:
        base = server.url
        workers = _children(server.proc.pid)
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
        server.stop()
