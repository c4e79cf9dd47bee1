"""Online reads apply a view's TTL to the microsecond, not to whole seconds.

A TTL of 900 ms once read as 0 (values never expire) and 9.9 s as 9 s: the lookup then
served stale values as PRESENT, or hid fresh ones as OUTSIDE_MAX_AGE.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from online_store.embedded import EmbeddedRedis
from service.app import create_app
from tests.service.conftest import (
    AppClient,
    Repo,
    columns,
    feast_cli,
    make_settings,
    new_repo,
    write_yaml,
)
from tests.service.write_helpers import write_online

DEFINITIONS = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64

rider = Entity(name="rider", join_keys=["rider_id"], value_type=ValueType.INT64)
source = FileSource(name="src", path="data/src.parquet", timestamp_field="event_timestamp")
long_fraction = FeatureView(
    name="long_fraction", entities=[rider], ttl=timedelta(seconds=9, milliseconds=900),
    schema=[Field(name="x", dtype=Float64)], source=source,
)
short = FeatureView(
    name="short", entities=[rider], ttl=timedelta(milliseconds=900),
    schema=[Field(name="x", dtype=Float64)], source=source,
)
"""


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, service_redis: EmbeddedRedis
) -> Iterator[AppClient]:
    path, when = new_repo(tmp_path_factory, "ttl-precision", DEFINITIONS)
    table = {
        "rider_id": pa.array([1], pa.int64()),
        "event_timestamp": pa.array([when], pa.timestamp("us", tz="UTC")),
        "x": pa.array([1.0]),
    }
    pq.write_table(pa.table(table), path / "data" / "src.parquet")
    registry_url = f"sqlite:///{path / 'data' / 'registry.db'}"
    redis_url = service_redis.url
    write_yaml(path, registry_url=registry_url, redis_url=redis_url, stock=False, project="ttl")
    feast_cli(path, redis_url, registry_url, "apply")
    repo = Repo(path=path, registry_url=registry_url, redis_url=redis_url, end=when)
    app_client = AppClient(create_app(make_settings(repo)))
    yield app_client
    app_client.close()


def _write(client: AppClient, view: str, rider: int, age: timedelta) -> None:
    when = datetime.now(UTC) - age
    df: dict[str, list[Any]] = {
        "rider_id": [rider],
        "event_timestamp": [when.isoformat()],
        "x": [float(rider)],
    }
    resp = write_online(client, view, df)
    assert resp.status_code == 200, resp.text


def _status(client: AppClient, view: str, rider: int) -> tuple[str, Any]:
    resp = client.post(
        "/get-online-features",
        json={"entities": {"rider_id": [rider]}, "features": [f"{view}:x"]},
    )
    assert resp.status_code == 200, resp.text
    col = columns(resp.json())["x"]
    return col["statuses"][0], col["values"][0]


def test_fraction_of_a_second_is_kept_in_a_long_ttl(client: AppClient) -> None:
    # 9.0 s old under a 9.9 s TTL: fresh (a TTL cut to 9 s called it expired).
    _write(client, "long_fraction", 11, timedelta(seconds=9))
    assert _status(client, "long_fraction", 11) == ("PRESENT", 11.0)
    # 10.5 s old: past 9.9 s.
    _write(client, "long_fraction", 12, timedelta(seconds=10, milliseconds=500))
    assert _status(client, "long_fraction", 12) == ("OUTSIDE_MAX_AGE", None)


def test_sub_second_ttl_expires_values(client: AppClient) -> None:
    # 5 s old under a 900 ms TTL: expired (a TTL cut to 0 s never expired anything).
    _write(client, "short", 21, timedelta(seconds=5))
    assert _status(client, "short", 21) == ("OUTSIDE_MAX_AGE", None)
    # Several entities in one lookup take the column path: same rule.
    _write(client, "short", 22, timedelta(0))
    resp = client.post(
        "/get-online-features",
        json={"entities": {"rider_id": [21, 22]}, "features": ["short:x"]},
    )
    assert resp.status_code == 200, resp.text
    assert columns(resp.json())["x"]["statuses"] == ["OUTSIDE_MAX_AGE", "PRESENT"]


def test_registry_and_freshness_show_the_fraction(client: AppClient) -> None:
    views = {v["name"]: v for v in client.get("/registry/feature-views").json()}
    assert views["long_fraction"]["ttl_seconds"] == 9.9
    assert views["short"]["ttl_seconds"] == 0.9
    board = {row["feature_view"]: row for row in client.get("/statistics/freshness").json()}
    assert board["short"]["ttl_seconds"] == 0.9
