"""Backends a reliability test owns and may stop: a throwaway PostgreSQL cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.reliability.servers import ThrowawayPostgres


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
