"""Fixtures for the pipelines' tests, run in .venv-pipelines (``make test`` does both suites).

Airflow reads its configuration when first imported, so this module points it at a private
home and SQLite metadata database before any test imports it; ``airflow db migrate`` then
runs once per session, as a user's first step would. Feature repos are the example repo's
definitions and generator, with real Redis (a private ``redis-server``) and a SQL registry.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from online_store.embedded import EmbeddedRedis
from tests.service.conftest import ROOT, Repo, build_repo, feast_cli, write_yaml

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="featurestore-airflow-"))
# Gone at exit even when no test asked for the database (e.g. --collect-only).
atexit.register(shutil.rmtree, _AIRFLOW_HOME, True)
AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(_AIRFLOW_HOME),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "pipelines" / "airflow_dags"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
}
os.environ.update(AIRFLOW_ENV)
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata database (SQLite), removed when the session's process ends."""
    subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"],
        env={**os.environ, **AIRFLOW_ENV},
        check=True,
        capture_output=True,
        timeout=300,
    )
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def pipelines_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("pipelines-redis"), persistent=False)
    server.start()
    yield server
    server.stop()


def fresh_repo(path: Path, *, registry_url: str, redis_url: str, rows: int = 2000) -> Repo:
    """The example repo with generated data ending an hour ago, applied, NOT materialized."""
    sys.path.insert(0, str(ROOT / "feature_repo"))
    from generate import generate

    (path / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "feature_repo" / "definitions.py", path / "definitions.py")
    write_yaml(path, registry_url=registry_url, redis_url=redis_url, stock=False)
    end = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    generate(path / "data", rows=rows, seed=3, end=end)
    feast_cli(path, redis_url, registry_url, "apply")
    return Repo(path=path, registry_url=registry_url, redis_url=redis_url, end=end)


@pytest.fixture(scope="session")
def training_repo(tmp_path_factory: pytest.TempPathFactory, pipelines_redis: EmbeddedRedis) -> Repo:
    """A materialized example repo (SQLite registry) with enough trips to learn from."""
    path = tmp_path_factory.mktemp("training-repo")
    registry_url = f"sqlite:///{path / 'data' / 'registry.db'}"
    return build_repo(path, registry_url=registry_url, redis_url=pipelines_redis.url, rows=30_000)


def store_connection(monkeypatch: pytest.MonkeyPatch, repo: Repo) -> None:
    """Give the backends to Airflow as the ``featurestore_default`` connection (env form)."""
    extra = {"registry_url": repo.registry_url, "redis_url": repo.redis_url}
    monkeypatch.setenv(
        "AIRFLOW_CONN_FEATURESTORE_DEFAULT", json.dumps({"conn_type": "generic", "extra": extra})
    )
    for name in ("FEATURESTORE_REGISTRY_URL", "FEATURESTORE_REDIS_URL", "FEATURESTORE_REPO_PATH"):
        monkeypatch.delenv(name, raising=False)
