"""The service on a real three-node Redis Cluster (``redis_type: redis_cluster``)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import yaml

from online_store.embedded import find_redis_server, free_port
from service.app import create_app
from service.settings import Settings
from tests.service.conftest import AppClient, Repo, columns


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
    path = tmp_path / "cluster-repo"
    path.mkdir()
    shutil.copy(repo.path / "definitions.py", path / "definitions.py")
    shutil.copytree(repo.path / "data", path / "data", ignore=shutil.ignore_patterns("*.db"))
    config = yaml.safe_load((repo.path / "feature_store.yaml").read_text())
    config["online_store"] = {
        "type": "online_store.store.FastRedisOnlineStore",
        "redis_type": "redis_cluster",
        "connection_string": f"127.0.0.1:{cluster_ports[0]}",
    }
    (path / "feature_store.yaml").write_text(yaml.safe_dump(config))
    # Same registry as the session repo: only the online store differs.
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
