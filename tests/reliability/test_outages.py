"""Backends going away and coming back: clear 503s, no hangs, recovery by itself."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from online_store.embedded import EmbeddedRedis
from service.app import create_app
from tests.reliability.servers import ThrowawayPostgres
from tests.service.conftest import AppClient, build_repo, make_settings

REQUEST = {
    "features": ["customer_profile:membership_tier", "customer_profile:lifetime_trip_count"],
    "entities": {"customer_id": ["c_0000000", "c_0000001", "c_0000002"]},
}


def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _values(body: dict[str, Any]) -> list[Any]:
    return [result["values"] for result in body["results"]]


def test_redis_outage_gives_fast_503_then_recovers_by_itself(
    tmp_path: Path, redis_server_factory: Callable[..., EmbeddedRedis]
) -> None:
    server = redis_server_factory(persistent=True)
    repo = build_repo(
        tmp_path / "repo",
        registry_url=f"sqlite:///{tmp_path / 'registry.db'}",
        redis_url=server.url,
    )
    app = AppClient(create_app(make_settings(repo, redis_timeout_seconds=0.5)))
    try:
        before = app.post("/get-online-features", json=REQUEST)
        assert before.status_code == 200
        time.sleep(1.2)  # let the AOF (fsync every second) hold everything
        server.kill()

        started = time.monotonic()
        down = app.post("/get-online-features", json=REQUEST)
        assert time.monotonic() - started < 5
        assert down.status_code == 503
        error = down.json()["error"]
        assert error["type"] == "backend_unavailable"
        assert "redis" in error["message"].lower()
        ready = app.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["error"]["redis"] != "ok"

        EmbeddedRedis(server.data_dir, port=server.port).start()
        assert _wait_for(
            lambda: app.post("/get-online-features", json=REQUEST).status_code == 200, 15
        )
        after = app.post("/get-online-features", json=REQUEST)
        assert _values(after.json()) == _values(before.json())
        assert app.get("/ready").status_code == 200
    finally:
        app.close()
        EmbeddedRedis(server.data_dir, port=server.port).start()
        server.owned = True  # the factory stops what it started, including the restart


def test_registry_outage_keeps_serving_from_the_cached_registry(
    tmp_path: Path,
    redis_url: str,
    throwaway_postgres: Callable[[], ThrowawayPostgres],
) -> None:
    pg = throwaway_postgres()
    repo = build_repo(tmp_path / "repo", registry_url=pg.url, redis_url=redis_url)
    app = AppClient(create_app(make_settings(repo, registry_refresh_seconds=0.5)))
    try:
        before = app.post("/get-online-features", json=REQUEST)
        assert before.status_code == 200
        assert app.get("/ready").status_code == 200

        pg.stop()
        time.sleep(1.5)  # several refresh attempts fail meanwhile
        during = app.post("/get-online-features", json=REQUEST)
        assert during.status_code == 200
        assert _values(during.json()) == _values(before.json())
        started = time.monotonic()
        ready = app.get("/ready")
        assert time.monotonic() - started < 10
        assert ready.status_code == 503
        assert ready.json()["error"]["registry"] != "ok"
        assert ready.json()["error"]["redis"] == "ok"

        pg.start()
        assert _wait_for(lambda: app.get("/ready").status_code == 200, 20)
        assert app.post("/get-online-features", json=REQUEST).status_code == 200
    finally:
        app.close()
        sa.create_engine(pg.url).dispose()
