"""Fixtures shared by every test: real Redis and real PostgreSQL, nothing faked.

- ``redis_url``: a private, throwaway ``redis-server`` for the test session (flushed per test).
- ``redis_server_factory``: start extra private servers (persistence, outage tests).
- ``pg_url``: a fresh PostgreSQL database on the machine's server (127.0.0.1:5432),
  dropped at the end of the session.

``make test`` runs the suite in parallel pytest-xdist workers; each worker is a test session
of its own, so each has its own private Redis, database and Spark session, and nothing a test
writes is seen by another worker's tests.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from online_store.embedded import EmbeddedRedis

# tests/pipelines need Airflow, kfp and MLflow, which live in .venv-pipelines only; `make
# test` runs them there, so a run in the service's .venv leaves them out instead of failing
# to import them.
collect_ignore = [] if importlib.util.find_spec("airflow") else ["pipelines"]

PG_ADMIN_URL = os.environ.get(
    "FEATURESTORE_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def _private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persistent=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(_private_redis: EmbeddedRedis) -> str:
    """URL of a real Redis server whose DB 0 is empty at the start of the test."""
    client = redis.Redis.from_url(_private_redis.url)
    client.flushall()
    client.close()
    return _private_redis.url


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[Callable[..., EmbeddedRedis]]:
    """Start extra private ``redis-server`` processes; all are stopped after the test."""
    started: list[EmbeddedRedis] = []

    def start(*, persistent: bool = True) -> EmbeddedRedis:
        server = EmbeddedRedis(tmp_path / f"redis-{len(started)}", persistent=persistent)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped after the session."""
    name = f"fs_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local Spark session for the whole test session (its JVM start-up is paid once).

    ``local[2]`` with two shuffle partitions and no UI keeps it light on a small machine; the
    Spark offline store and engine use it as the active session.
    """
    from offline_store.spark_session import spark_session

    session = spark_session(
        {
            "spark.master": "local[2]",
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.driver.memory": "1g",
            "spark.sql.adaptive.enabled": "true",
        }
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
