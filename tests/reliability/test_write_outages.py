"""Writes while a store is down: a 503 that says what is where, nothing appended offline
for a refused request, and a retry once the store is back that stores every row once.

The HTTP tests share one repo whose Redis each test stops (SIGKILL, as a crash or a lost
host would) and starts again on the same port; the writer test stops Redis, or fills its
memory, between two chunks of one write.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import redis
from feast import FileSource, PushSource

from foundation.errors import BackendUnavailableError, InvalidRequestError
from offline_store.listing import source_files
from online_store.embedded import EmbeddedRedis
from online_store.reader import ReadPlan, ViewReadSpec
from online_store.writer import write_arrow
from service.app import create_app
from service.writes import build_table, write_tables
from tests.online_store.views import INT, T0, driver_view, rows
from tests.service.conftest import AppClient, Repo, build_repo, make_settings
from tests.service.write_helpers import (
    PUSH,
    driver_df,
    leftovers,
    offline_disk_full,
    read_driver,
)

VIEW = "driver_hourly_stats"


@dataclasses.dataclass
class Setup:
    repo: Repo
    server: EmbeddedRedis
    app: AppClient


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("write-outages")
    server = EmbeddedRedis(root / "redis", persistent=False)
    server.start()
    try:
        repo = build_repo(
            root / "repo",
            registry_url=f"sqlite:///{root / 'registry.db'}",
            redis_url=server.url,
            rows=200,
        )
        app = AppClient(create_app(make_settings(repo, redis_timeout_seconds=0.5)))
        try:
            yield Setup(repo, server, app)
        finally:
            app.close()
    finally:
        server.stop()


@contextmanager
def redis_down(server: EmbeddedRedis) -> Iterator[None]:
    """Redis killed for the block, then started again (empty) on the same port."""
    server.kill()
    try:
        yield
    finally:
        server.start()


def _offline_rows(repo: Repo, driver_id: int) -> int:
    table = pq.read_table(source_files(str(repo.path / "data" / "driver_stats.parquet")))
    return int(pc.sum(pc.equal(table.column("driver_id"), driver_id)).as_py() or 0)


def _when() -> datetime:
    return (datetime.now(UTC) - timedelta(minutes=1)).replace(microsecond=0)


def _assert_redis_503(resp: Any, *mentions: str) -> None:
    assert resp.status_code == 503, resp.text
    error = resp.json()["error"]
    assert error["type"] == "backend_unavailable"
    assert error["backend"] == "redis"
    assert error["feature_view"] == VIEW
    for mention in ("Redis", "retry the same write", *mentions):
        assert mention in error["message"], error


def _assert_stored_once(setup: Setup, driver: int, *, offline: int) -> None:
    stored = read_driver(setup.app, driver)
    assert stored["conv_rate"]["statuses"] == ["PRESENT"]
    assert stored["conv_rate"]["values"] == [0.25]
    assert _offline_rows(setup.repo, driver) == offline


@pytest.mark.parametrize(
    ("to", "driver", "offline"), [("online", 960001, 0), ("online_and_offline", 960002, 1)]
)
def test_push_while_redis_is_down_is_503_and_the_retry_stores_the_rows_once(
    setup: Setup, to: str, driver: int, offline: int
) -> None:
    body = {"push_source_name": PUSH, "df": driver_df([driver], _when()), "to": to}
    with redis_down(setup.server):
        started = time.monotonic()
        down = setup.app.post("/push", json=body)
        assert time.monotonic() - started < 15
        _assert_redis_503(down)
        if offline:
            assert "nothing was appended to the offline store" in down.json()["error"]["message"]
        assert _offline_rows(setup.repo, driver) == 0

    again = setup.app.post("/push", json=body)
    assert again.status_code == 200, again.text
    answer = again.json()
    assert (answer["written"], answer["skipped_older"]) == (1, 0)
    assert answer["offline_written"] == offline
    _assert_stored_once(setup, driver, offline=offline)


def test_write_to_online_store_while_redis_is_down_is_503_and_the_retry_writes(
    setup: Setup,
) -> None:
    body = {"feature_view_name": VIEW, "df": driver_df([960003], _when())}
    with redis_down(setup.server):
        _assert_redis_503(setup.app.post("/write-to-online-store", json=body))

    again = setup.app.post("/write-to-online-store", json=body)
    assert again.status_code == 200, again.text
    assert (again.json()["written"], again.json()["offline_written"]) == (1, 0)
    _assert_stored_once(setup, 960003, offline=0)


def _assert_offline_503(resp: Any, *mentions: str) -> None:
    assert resp.status_code == 503, resp.text
    error = resp.json()["error"]
    assert (error["type"], error["backend"], error["feature_view"]) == (
        "backend_unavailable",
        "offline_store",
        VIEW,
    )
    for mention in ("No space left on device", "retry the same request", *mentions):
        assert mention in error["message"], error


def test_a_full_disk_while_staging_the_offline_file_is_503_and_writes_nothing(
    setup: Setup,
) -> None:
    body = {
        "push_source_name": PUSH,
        "df": driver_df([960006], _when()),
        "to": "online_and_offline",
    }
    with offline_disk_full("stage"):
        down = setup.app.post("/push", json=body)
    _assert_offline_503(down, "nothing was written, online or offline")
    assert read_driver(setup.app, 960006)["conv_rate"]["statuses"] == ["NOT_FOUND"]
    assert _offline_rows(setup.repo, 960006) == 0
    assert leftovers(setup.repo.path / "data") == []

    again = setup.app.post("/push", json=body)
    assert again.status_code == 200, again.text
    answer = again.json()
    assert (answer["written"], answer["skipped_older"], answer["offline_written"]) == (1, 0, 1)
    _assert_stored_once(setup, 960006, offline=1)


def test_offline_append_failing_after_the_online_write_is_503_and_the_retry_appends_once(
    setup: Setup,
) -> None:
    body = {
        "push_source_name": PUSH,
        "df": driver_df([960004], _when()),
        "to": "online_and_offline",
    }
    # staged fine, then no room for the directory entry of the final rename
    with offline_disk_full("commit"):
        down = setup.app.post("/push", json=body)
    _assert_offline_503(down, "in the online store", "nothing was appended offline")
    assert _offline_rows(setup.repo, 960004) == 0
    assert leftovers(setup.repo.path / "data") == []

    again = setup.app.post("/push", json=body)
    assert again.status_code == 200, again.text
    answer = again.json()
    # the first attempt's online row has the same event time: skipped, not written twice
    assert (answer["written"], answer["skipped_older"], answer["offline_written"]) == (0, 1, 1)
    _assert_stored_once(setup, 960004, offline=1)


def test_an_offline_target_that_takes_no_pushes_is_refused_before_the_online_write(
    setup: Setup, tmp_path: Path
) -> None:
    store = setup.app.state.store
    info = setup.app.state.catalog.snapshot.views[VIEW]
    table = build_table(info, driver_df([960005], _when()))
    view = info.view.__copy__()
    parquet = FileSource(path=str(tmp_path / "x.parquet"), timestamp_field="event_timestamp")
    view.batch_source = PushSource(name="not_a_file", batch_source=parquet)
    elsewhere = dataclasses.replace(info, view=view)
    with pytest.raises(InvalidRequestError, match="only FileSource"):
        write_tables(
            store, setup.app.state.redis_sync, [(elsewhere, table)], online=True, offline=True
        )
    assert read_driver(setup.app, 960005)["conv_rate"]["statuses"] == ["NOT_FOUND"]


@pytest.mark.parametrize("fault", ["shutdown", "maxmemory"])
def test_redis_failing_between_chunks_leaves_whole_rows_and_a_rerun_converges(
    redis_server_factory: Any, fault: str
) -> None:
    server: EmbeddedRedis = redis_server_factory(persistent=True)
    client = redis.Redis.from_url(server.url, socket_timeout=2, socket_connect_timeout=2)
    admin = redis.Redis.from_url(server.url)
    view = driver_view()
    drivers = list(range(1, 7))
    table = rows(*[(d, float(d), f"row {d}", T0 + timedelta(minutes=d)) for d in drivers])
    chunks: list[int] = []

    def fail_after_the_first_chunk(done: int) -> None:
        chunks.append(done)
        if len(chunks) == 1:
            if fault == "shutdown":
                server.stop()  # a clean shutdown: the AOF keeps the first chunk
            else:
                admin.config_set("maxmemory", 1)

    try:
        with pytest.raises(BackendUnavailableError) as raised:
            write_arrow(
                client,
                view,
                table,
                project="p",
                chunk_rows=2,
                progress=fail_after_the_first_chunk,
            )
        assert raised.value.details == {"backend": "redis", "feature_view": "stats"}
        assert chunks == [2]
    finally:
        if fault == "shutdown":
            server.start()
        else:
            admin.config_set("maxmemory", 0)

    plan = ReadPlan.compile("p", [ViewReadSpec("stats", ("driver_id",), INT, ("rate", "label"), 0)])
    after = plan.read(client, {"driver_id": drivers}, now=T0)
    # the first chunk whole, nothing of the others
    assert after.columns["stats:label"].values == ["row 1", "row 2", None, None, None, None]
    assert after.columns["stats:rate"].values[:2] == [1.0, 2.0]

    rerun = write_arrow(client, view, table, project="p", chunk_rows=2)
    assert (rerun.rows_in, rerun.rows_written) == (6, 4)
    final = plan.read(client, {"driver_id": drivers}, now=T0)
    assert final.columns["stats:label"].values == [f"row {d}" for d in drivers]
    assert final.columns["stats:rate"].event_timestamps == [
        T0 + timedelta(minutes=d) for d in drivers
    ]
    client.close()
    admin.close()
