"""The `featurestore` command: the non-loopback guard and a real serve/health cycle."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from online_store.embedded import free_port
from tests.frame.conftest import BIN


def _serve(repo: Path, redis_url: str | None, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTORE_")}
    if redis_url:
        env["FEATURESTORE_REDIS_URL"] = redis_url
    return subprocess.Popen(
        [str(BIN / "featurestore"), "serve", "--repo", str(repo), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_health(port: int, proc: subprocess.Popen[str]) -> httpx.Response:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("service never answered /health")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_non_loopback_bind_without_auth_refuses_to_start(
    example_repo: Path, redis_url: str, host: str
) -> None:
    proc = _serve(example_repo, redis_url, "--host", host, "--port", str(free_port()))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "--insecure" in err
    assert host in err


@pytest.mark.parametrize(("host", "extra"), [("127.0.0.1", ()), ("0.0.0.0", ("--insecure",))])
def test_serve_answers_health(
    example_repo: Path, redis_url: str, host: str, extra: tuple[str, ...]
) -> None:
    port = free_port()
    proc = _serve(example_repo, redis_url, "--host", host, "--port", str(port), *extra)
    try:
        assert _wait_health(port, proc).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_serve_without_redis_url_runs_and_stops_an_embedded_redis(example_repo: Path) -> None:
    port = free_port()
    proc = _serve(example_repo, None, "--port", str(port))
    state = example_repo / "data" / "redis" / "server.json"
    try:
        assert _wait_health(port, proc).status_code == 200
        assert state.exists()
        url = json.loads(state.read_text())["url"]
        assert redis.Redis.from_url(url).ping()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert not state.exists()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()


def test_serve_uses_the_redis_feature_store_yaml_names_without_an_embedded_one(
    example_repo: Path, redis_url: str
) -> None:
    """A repo naming its Redis (and no FEATURESTORE_REDIS_URL): nothing embedded starts."""
    config_path = example_repo / "feature_store.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["online_store"]["connection_string"] = redis_url
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    proc = _serve(example_repo, None, "--port", str(port))
    named = redis.Redis.from_url(redis_url)
    try:
        assert _wait_health(port, proc).status_code == 200
        httpx.get(f"http://127.0.0.1:{port}/ready", timeout=30)  # pings its Redis
        # The service's connections are on the named Redis (ours is the other one).
        assert len(named.client_list()) >= 2
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        named.close()
    assert proc.returncode == 0
    assert not (example_repo / "data" / "redis").exists()


def test_env_prints_the_sqlite_default(example_repo: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTORE_")}
    out = subprocess.run(
        [str(BIN / "featurestore"), "env", "--repo", str(example_repo)],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert (
        out.strip()
        == f"export FEATURESTORE_REGISTRY_URL='sqlite:///{example_repo.resolve()}/data/registry.db'"
    )


def test_serve_offline_on_a_non_loopback_host_without_auth_refuses_to_start(
    example_repo: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTORE_")}
    proc = subprocess.run(
        [str(BIN / "featurestore"), "serve-offline", "--repo", str(example_repo),
         "--host", "0.0.0.0", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "serve-offline: refusing to start" in proc.stderr
    assert "--insecure" in proc.stderr
