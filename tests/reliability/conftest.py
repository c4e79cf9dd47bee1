"""A small example repo wired to backends the test owns, so it may stop them."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.reliability.servers import ThrowawayPostgres
from tests.service.conftest import ROOT, Repo, feast_cli, write_yaml


def build_repo(path: Path, *, registry_url: str, redis_url: str, rows: int = 1000) -> Repo:
    """Copy the example definitions, generate data, `feast apply` and materialize."""
    sys.path.insert(0, str(ROOT / "feature_repo"))
    from generate import generate

    (path / "data").mkdir(parents=True)
    shutil.copy(ROOT / "feature_repo" / "definitions.py", path / "definitions.py")
    write_yaml(path, registry_url=registry_url, redis_url=redis_url, stock=False)
    end = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    generate(path / "data", rows=rows, seed=5, end=end)
    feast_cli(path, redis_url, registry_url, "apply")
    start = (end - timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%S")
    stop = (end + timedelta(seconds=1)).isoformat()
    feast_cli(path, redis_url, registry_url, "materialize", start, stop)
    return Repo(path=path, registry_url=registry_url, redis_url=redis_url, end=end)


@pytest.fixture
def throwaway_postgres() -> Iterator[Callable[[], ThrowawayPostgres]]:
    started: list[ThrowawayPostgres] = []

    def start() -> ThrowawayPostgres:
        server = ThrowawayPostgres()
        server.init()
        started.append(server)
        return server

    yield start
    for server in started:
        server.destroy()
