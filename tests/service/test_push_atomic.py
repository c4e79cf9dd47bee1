"""A push through a source feeding several views: every offline source once, all or none.

Feast gives a view fed by a push source that source's batch source, and appends a push
to each view's ``batch_source``; a view that sets its own ``batch_source`` keeps its
rows apart (here ``trips_archive``, a directory, next to ``trips``' single file). A
push to ``trips_push`` therefore appends to two sources: a failure in the second must
leave neither with the rows, and the retry must store them once in each. Views sharing
one source (``rates`` and ``counts``) get the rows once, not once per view.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from offline_store.listing import source_files
from online_store.embedded import EmbeddedRedis
from service.app import create_app
from tests.service.conftest import AppClient, Repo, columns, feast_cli, make_settings, write_yaml
from tests.service.write_helpers import leftovers, offline_disk_full, write_online

DEFINITIONS = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float64, Int64

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
zone = Entity(name="zone", join_keys=["zone_id"], value_type=ValueType.INT32)


def source(name, path):
    return FileSource(name=name, path=path, timestamp_field="event_timestamp",
                      created_timestamp_column="created")


def view(name, entity, push, feature, dtype):
    return FeatureView(name=name, entities=[entity], ttl=timedelta(0), source=push,
                       schema=[Field(name=feature, dtype=dtype)])


trips_push = PushSource(name="trips_push", batch_source=source("trips", "data/trips.parquet"))
trips = view("trips", driver, trips_push, "rate", Float64)
trips_archive = view("trips_archive", driver, trips_push, "rate", Float64)
trips_archive.batch_source = source("trips_archive", "data/archive")

stats_push = PushSource(name="stats_push", batch_source=source("stats", "data/stats.parquet"))
rates = view("rates", driver, stats_push, "rate", Float64)
counts = view("counts", driver, stats_push, "trips", Int64)

fresh_push = PushSource(name="fresh_push", batch_source=source("fresh", "data/fresh.parquet"))
fresh_rates = view("fresh_rates", driver, fresh_push, "rate", Float64)
fresh_counts = view("fresh_counts", driver, fresh_push, "trips", Int64)

zones = view("zones", zone, source("zones", "data/zones.parquet"), "demand", Float64)
"""
WHEN = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
_TS = pa.timestamp("us", tz="UTC")
_ids = itertools.count(1000)


def _seed(path: Path, key: str, key_type: pa.DataType, **features: pa.DataType) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {
        key: pa.array([1], key_type),
        "event_timestamp": pa.array([WHEN], _TS),
        "created": pa.array([WHEN], _TS),
    }
    columns.update({name: pa.array([1], dtype) for name, dtype in features.items()})
    pq.write_table(pa.table(columns), path)


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory, service_redis: EmbeddedRedis
) -> Iterator[tuple[AppClient, Path]]:
    path = tmp_path_factory.mktemp("push-atomic") / "repo"
    data = path / "data"
    data.mkdir(parents=True)
    (path / "definitions.py").write_text(DEFINITIONS)
    _seed(data / "trips.parquet", "driver_id", pa.int64(), rate=pa.float64())
    _seed(data / "archive" / "part-0.parquet", "driver_id", pa.int64(), rate=pa.float64())
    _seed(data / "stats.parquet", "driver_id", pa.int64(), rate=pa.float64(), trips=pa.int64())
    _seed(data / "zones.parquet", "zone_id", pa.int32(), demand=pa.float64())
    registry_url = f"sqlite:///{data / 'registry.db'}"
    write_yaml(path, registry_url=registry_url, redis_url=service_redis.url, stock=False)
    config = yaml.safe_load((path / "feature_store.yaml").read_text())
    config["project"] = "push_atomic"
    (path / "feature_store.yaml").write_text(yaml.safe_dump(config))
    feast_cli(path, service_redis.url, registry_url, "apply")
    repo = Repo(path=path, registry_url=registry_url, redis_url=service_redis.url, end=WHEN)
    client = AppClient(create_app(make_settings(repo)))
    try:
        yield client, data
    finally:
        client.close()


def _rows(source: Path, driver: int) -> list[dict[str, Any]]:
    table = pq.read_table(source_files(str(source)))
    mine = table.filter(pc.equal(table.column("driver_id"), driver))
    return mine.drop_columns(["created"]).to_pylist()


def _df(driver: int, **features: Any) -> dict[str, list[Any]]:
    return {
        "driver_id": [driver],
        "event_timestamp": ["2026-03-02T08:00:00Z"],
        "created": ["2026-03-02T08:00:01Z"],
        **{name: [value] for name, value in features.items()},
    }


def _online(client: AppClient, driver: int) -> dict[str, str]:
    body = {
        "entities": {"driver_id": [driver]},
        "features": ["trips:rate", "trips_archive:rate"],
        "full_feature_names": True,
    }
    resp = client.post("/get-online-features", json=body)
    assert resp.status_code == 200, resp.text
    return {name: col["statuses"][0] for name, col in columns(resp.json()).items()}


@pytest.mark.parametrize("to", ["offline", "online_and_offline"])
@pytest.mark.parametrize("phase", ["stage", "commit"])
def test_a_push_failing_on_its_second_offline_source_appends_to_neither_and_the_retry_once(
    app: tuple[AppClient, Path], phase: Any, to: str
) -> None:
    client, data = app
    driver = next(_ids)
    body = {"push_source_name": "trips_push", "df": _df(driver, rate=0.5), "to": to}
    with offline_disk_full(phase, nth=2):
        down = client.post("/push", json=body)

    assert down.status_code == 503, down.text
    error = down.json()["error"]
    assert (error["type"], error["backend"]) == ("backend_unavailable", "offline_store")
    assert error["feature_view"] in ("trips", "trips_archive")
    for mention in ("No space left on device", "nothing was", "retry the same request"):
        assert mention in error["message"], error
    assert "already appended" not in error["message"]
    assert _rows(data / "trips.parquet", driver) == []
    assert _rows(data / "archive", driver) == []
    assert leftovers(data) == []
    online_first = to == "online_and_offline" and phase == "commit"
    expected = "PRESENT" if online_first else "NOT_FOUND"
    assert _online(client, driver) == {
        "driver_id": "PRESENT",
        "trips__rate": expected,
        "trips_archive__rate": expected,
    }

    again = client.post("/push", json=body)
    assert again.status_code == 200, again.text
    answer = again.json()
    assert answer["offline_written"] == 2
    if to == "online_and_offline":
        # rows the failed request stored online have an equal event time: skipped
        assert (answer["written"], answer["skipped_older"]) == ((0, 2) if online_first else (2, 0))
    row = {"driver_id": driver, "event_timestamp": datetime(2026, 3, 2, 8, tzinfo=UTC), "rate": 0.5}
    assert _rows(data / "trips.parquet", driver) == [row]
    assert _rows(data / "archive", driver) == [row]


def test_views_sharing_an_offline_source_get_the_rows_once(app: tuple[AppClient, Path]) -> None:
    client, data = app
    driver = next(_ids)
    body = {"push_source_name": "stats_push", "df": _df(driver, rate=0.5, trips=3), "to": "offline"}
    resp = client.post("/push", json=body)
    assert resp.status_code == 200, resp.text
    assert sorted(resp.json()["feature_views"]) == ["counts", "rates"]
    assert (resp.json()["written"], resp.json()["offline_written"]) == (1, 1)
    assert [(r["rate"], r["trips"]) for r in _rows(data / "stats.parquet", driver)] == [(0.5, 3)]


def test_a_first_push_to_a_shared_source_creates_it_with_every_views_columns(
    app: tuple[AppClient, Path],
) -> None:
    client, data = app
    driver = next(_ids)
    body = {
        "push_source_name": "fresh_push",
        "df": _df(driver, rate=0.25, trips=4),
        "to": "offline",
    }
    resp = client.post("/push", json=body)
    assert resp.status_code == 200, resp.text
    assert source_files(str(data / "fresh.parquet")) == [str(data / "fresh.parquet")]
    assert [(r["rate"], r["trips"]) for r in _rows(data / "fresh.parquet", driver)] == [(0.25, 4)]


def _zone_write(client: AppClient, zone: Any) -> Any:
    df = {"zone_id": [zone], "event_timestamp": ["2026-03-02T08:00:00Z"], "demand": [1.5]}
    return write_online(client, "zones", df)


def _zone_read(client: AppClient, zone: Any) -> Any:
    body = {"entities": {"zone_id": [zone]}, "features": ["zones:demand"]}
    return client.post("/get-online-features", json=body)


@pytest.mark.parametrize(("spelling", "zone"), [("71", 71), (72.0, 72), ("-73", -73)])
def test_an_int32_key_spelled_as_a_lookup_may_spell_it_is_written_as_that_key(
    app: tuple[AppClient, Path], spelling: Any, zone: int
) -> None:
    client, _ = app
    resp = _zone_write(client, spelling)
    assert resp.status_code == 200, resp.text
    assert resp.json()["written"] == 1
    read = columns(_zone_read(client, zone).json())
    assert read["zone_id"]["values"] == [zone]
    assert (read["demand"]["statuses"], read["demand"]["values"]) == (["PRESENT"], [1.5])


@pytest.mark.parametrize(
    ("bad", "fix"),
    [
        ("7.5", "decimal string"),
        (7.5, "exact integer"),
        (True, "JSON number"),
        ("2147483648", "INT32 range"),
        (2147483648.0, "INT32 range"),
        (" 74", "decimal string"),
    ],
)
def test_an_int32_key_a_lookup_refuses_is_refused_on_write_naming_the_fix(
    app: tuple[AppClient, Path], bad: Any, fix: str
) -> None:
    client, _ = app
    assert _zone_read(client, bad).status_code == 422
    resp = _zone_write(client, bad)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert (error["type"], error["column"], error["row"]) == ("schema_mismatch", "zone_id", 0)
    assert fix in error["message"], error
