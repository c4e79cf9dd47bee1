"""Fixtures for the online store tests: a module-wide private Redis with several DBs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from online_store.embedded import EmbeddedRedis


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
