"""Fixtures for the online store tests: a module-wide private Redis with several DBs."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from online_store.embedded import EmbeddedRedis, find_redis_server, free_port


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (``redis://127.0.0.1:port/``) of a private server; append the DB number."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("online-redis"), persistent=False)
    server.start()
    yield server.url.rsplit("/", 1)[0] + "/"
    server.stop()


def snapshot(url: str) -> dict[bytes, dict[bytes, bytes]]:
    """Every hash in a DB, field by field."""
    client = redis.Redis.from_url(url)
    try:
        return {key: client.hgetall(key) for key in client.scan_iter(count=10_000)}
    finally:
        client.close()


@pytest.fixture
def tmp_repo(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A real three-node Redis Cluster on loopback (slots split across nodes)."""
    ports = [free_port() for _ in range(3)]
    bus_ports = [free_port() for _ in range(3)]
    procs = []
    for port, bus_port in zip(ports, bus_ports, strict=True):
        node_dir = tmp_path / f"node{port}"
        node_dir.mkdir()
        procs.append(
            subprocess.Popen(
                [
                    find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    # The default bus port (port + 10000) overflows for high free ports.
                    "--cluster-port", str(bus_port),
                    "--dir", str(node_dir), "--save", "", "--appendonly", "no",
                ],
                stdout=subprocess.DEVNULL,
            )
        )  # fmt: skip
    try:
        clients = []
        for port in ports:
            c = redis.Redis(port=port, socket_timeout=5)
            for attempt in range(200):
                try:
                    c.ping()
                    break
                except redis.ConnectionError:
                    assert attempt < 199, f"cluster node on port {port} did not start"
                    time.sleep(0.02)
            clients.append(c)
        bounds = [(0, 5460), (5461, 10922), (10923, 16383)]
        for c, (lo, hi) in zip(clients, bounds, strict=True):
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        for port, bus_port in zip(ports[1:], bus_ports[1:], strict=True):
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port, bus_port)
        deadline = time.monotonic() + 20
        while any(b"cluster_state:ok" not in c.execute_command("CLUSTER", "INFO") for c in clients):
            assert time.monotonic() < deadline, "cluster did not converge"
            time.sleep(0.1)
        client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in ports])
        yield client
        client.close()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
