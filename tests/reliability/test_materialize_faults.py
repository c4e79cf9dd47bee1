"""Redis going away in the middle of `feast materialize` (our engine).

The run must fail with a message that says what happened and what to do, record no
materialized interval for the failed window, and a rerun must converge to exactly what
an uninterrupted run writes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis
from feast import FeatureStore

from online_store.embedded import EmbeddedRedis
from tests.online_store.conftest import snapshot
from tests.reliability.versioned import window, write_versioned_repo

FEAST = str(Path(sys.executable).parent / "feast")
DRIVERS = 150_000


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTORE_")}


def test_redis_dropping_mid_materialize_fails_clearly_and_a_rerun_converges(
    tmp_path: Path, redis_server_factory: Callable[..., EmbeddedRedis]
) -> None:
    server = redis_server_factory(persistent=False)
    repo = tmp_path / "repo"
    write_versioned_repo(repo, server.url, drivers=DRIVERS)
    subprocess.run([FEAST, "apply"], cwd=repo, env=_env(), check=True, capture_output=True)

    run = subprocess.Popen(
        [FEAST, "materialize", *window(1)], cwd=repo, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    client = redis.Redis.from_url(server.url)
    deadline = time.monotonic() + 120
    while client.dbsize() == 0:
        assert run.poll() is None, "materialize finished before Redis could be stopped"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    server.kill()
    _, err = run.communicate(timeout=120)

    assert run.returncode != 0
    last = err.strip().splitlines()[-1]
    assert "BackendUnavailableError" in last
    assert "Redis" in last
    assert "race" in last  # the view being written
    assert "rerun" in last
    assert "127.0.0.1" in last

    # The registry is intact and records nothing for the failed window.
    store = FeatureStore(repo_path=str(repo))
    assert store.get_feature_view("race").materialization_intervals == []

    restarted = EmbeddedRedis(server.data_dir, port=server.port, persistent=False)
    restarted.start()
    try:
        subprocess.run([FEAST, "materialize", *window(1)], cwd=repo, env=_env(), check=True,
                       capture_output=True)  # fmt: skip
        clean = redis_server_factory(persistent=False)
        clean_repo = tmp_path / "clean"
        write_versioned_repo(clean_repo, clean.url, drivers=DRIVERS)
        for args in (["apply"], ["materialize", *window(1)]):
            subprocess.run([FEAST, *args], cwd=clean_repo, env=_env(), check=True,
                           capture_output=True)  # fmt: skip
        assert snapshot(restarted.url) == snapshot(clean.url)
        intervals = (
            FeatureStore(repo_path=str(repo)).get_feature_view("race").materialization_intervals
        )
        assert len(intervals) == 1
    finally:
        restarted.stop()


def test_a_hung_redis_fails_materialize_within_the_socket_timeout(
    tmp_path: Path, redis_server_factory: Callable[..., EmbeddedRedis]
) -> None:
    server = redis_server_factory(persistent=False)
    repo = tmp_path / "repo"
    write_versioned_repo(
        repo, server.url, drivers=DRIVERS, online_options={"socket_timeout_seconds": 2}
    )
    subprocess.run([FEAST, "apply"], cwd=repo, env=_env(), check=True, capture_output=True)
    pid = int(redis.Redis.from_url(server.url).info("server")["process_id"])
    run = subprocess.Popen(
        [FEAST, "materialize", *window(1)], cwd=repo, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    client = redis.Redis.from_url(server.url)
    while client.dbsize() == 0:
        assert run.poll() is None, "materialize finished before Redis could be frozen"
        time.sleep(0.005)
    os.kill(pid, signal.SIGSTOP)  # the server stops answering but keeps its sockets open
    frozen_at = time.monotonic()
    try:
        _, err = run.communicate(timeout=60)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert time.monotonic() - frozen_at < 30
    assert run.returncode != 0
    last = err.strip().splitlines()[-1]
    assert "BackendUnavailableError" in last
    assert "Timeout" in last
