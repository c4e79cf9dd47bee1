"""The service on a real three-node Redis Cluster (``redis_type: redis_cluster``)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from online_store.embedded import find_redis_server, free_port
from tests.service.backend_helpers import app_on, materialize_and_read_customers
from tests.service.conftest import Repo, columns


@pytest.fixture
def cluster_ports(tmp_path: Path) -> Iterator[list[int]]:
    ports = [free_port() for _ in range(3)]
    bus = [free_port() for _ in range(3)]
    procs = [
        subprocess.Popen(
            [find_redis_server(), "--port", str(p), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-port", str(b), "--dir", str(tmp_path), "--save", "",
             "--appendonly", "no", "--cluster-config-file", f"nodes-{p}.conf"],
            stdout=subprocess.DEVNULL,
        )
        for p, b in zip(ports, bus, strict=True)
    ]  # fmt: skip
    try:
        nodes = [redis.Redis(port=p, socket_timeout=5) for p in ports]
        deadline = time.monotonic() + 20
        for node in nodes:
            while True:
                try:
                    node.ping()
                    break
                except redis.ConnectionError:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
        for node, (lo, hi) in zip(nodes, [(0, 5460), (5461, 10922), (10923, 16383)], strict=True):
            node.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        for p, b in zip(ports[1:], bus[1:], strict=True):
            nodes[0].execute_command("CLUSTER", "MEET", "127.0.0.1", p, b)
        while any(b"cluster_state:ok" not in n.execute_command("CLUSTER", "INFO") for n in nodes):
            assert time.monotonic() < deadline, "cluster did not converge"
            time.sleep(0.1)
        yield ports
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_lookups_writes_and_jobs_on_redis_cluster(
    repo: Repo, tmp_path: Path, cluster_ports: list[int]
) -> None:
    app = app_on(
        repo,
        tmp_path / "cluster-repo",
        {
            "redis_type": "redis_cluster",
            "connection_string": f"127.0.0.1:{cluster_ports[0]}",
        },
    )
    try:
        assert app.get("/ready").status_code == 200
        materialize_and_read_customers(app, repo)

        when = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        write = app.post(
            "/write-to-online-store",
            json={
                "feature_view_name": "driver_customer_stats",
                "df": {"driver_id": [920001], "customer_id": ["c_cluster"],
                       "event_timestamp": [when], "trips_together": [3], "avg_tip": [1.5],
                       "last_rating": [5]},
            },
        )  # fmt: skip
        assert write.status_code == 200, write.text
        resp = app.post(
            "/get-online-features",
            json={"entities": {"driver_id": [920001], "customer_id": ["c_cluster"]},
                  "features": ["driver_customer_stats:avg_tip"]},
        )  # fmt: skip
        assert columns(resp.json())["avg_tip"]["values"] == [1.5]
        sizes = [redis.Redis(port=p).dbsize() for p in cluster_ports]
        assert sum(1 for size in sizes if size > 0) >= 2  # keys really spread over slots
    finally:
        app.close()
