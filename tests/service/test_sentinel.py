"""The service on Redis Sentinel (``redis_type: redis_sentinel``): redis-py finds the master."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from online_store.embedded import find_redis_server, free_port
from tests.service.backend_helpers import app_on, materialize_and_read_customers
from tests.service.conftest import Repo, columns


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
    # Feast's Sentinel form: the connection string lists the sentinels, not the master.
    app = app_on(
        repo,
        tmp_path / "sentinel-repo",
        {
            "redis_type": "redis_sentinel",
            "sentinel_master": "mymaster",
            "connection_string": f"127.0.0.1:{watcher}",
        },
    )
    try:
        assert app.get("/ready").status_code == 200
        customers = materialize_and_read_customers(app, repo)
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
