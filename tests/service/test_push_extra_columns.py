"""Offline push to a source whose Parquet has columns no feature view uses.

Stock Feast (``FeatureStore.push``, what ``feast serve``'s ``/push`` calls) appends a push
that carries every column of the source, and refuses one without the unused columns
(``ValueError``, a 500 over HTTP). We take both: the sent columns are written as sent,
cast to the source's types; columns not sent are written as nulls.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from feast import FeatureStore
from feast.data_source import PushMode

from offline_store.listing import source_files
from online_store.embedded import EmbeddedRedis
from service.app import create_app
from tests.service.conftest import ROOT, AppClient, Repo, feast_cli, make_settings, write_yaml

DEFINITIONS = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float32, Int64

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
source = FileSource(name="trips_source", path="data/trips.parquet",
                    timestamp_field="event_timestamp", created_timestamp_column="created")
trips_push = PushSource(name="trips_push", batch_source=source)
trips = FeatureView(name="trips", entities=[driver], ttl=timedelta(days=1), source=trips_push,
                    schema=[Field(name="conv_rate", dtype=Float32),
                            Field(name="trip_count", dtype=Int64)])
"""
WHEN = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
SOURCE = pa.table(
    {
        "driver_id": pa.array([1], pa.int64()),
        "event_timestamp": pa.array([WHEN], pa.timestamp("us", tz="UTC")),
        "created": pa.array([WHEN], pa.timestamp("us", tz="UTC")),
        "conv_rate": pa.array([0.5], pa.float32()),
        "trip_count": pa.array([3], pa.int64()),
        "note": pa.array(["seed"], pa.string()),  # used by no feature view
        "region_id": pa.array([11], pa.int32()),  # used by no feature view
    }
)
PUSHED = {
    "driver_id": [2, 3],
    "event_timestamp": ["2026-11-21T08:00:00Z", "2026-11-21T09:00:00Z"],
    "created": ["2026-11-21T08:00:01Z", "2026-11-21T09:00:01Z"],
    "conv_rate": [0.25, 0.75],
    "trip_count": [4, 5],
}
UNUSED = {"note": ["a", None], "region_id": [12, 13]}


def _repo_dir(path: Path) -> Path:
    (path / "data").mkdir(parents=True)
    (path / "definitions.py").write_text(DEFINITIONS)
    pq.write_table(SOURCE, path / "data" / "trips.parquet")
    return path


@pytest.fixture(scope="module")
def ours(
    tmp_path_factory: pytest.TempPathFactory, service_redis: EmbeddedRedis
) -> Iterator[tuple[AppClient, Path]]:
    path = _repo_dir(tmp_path_factory.mktemp("push-extra") / "repo")
    registry_url = f"sqlite:///{path / 'data' / 'registry.db'}"
    write_yaml(path, registry_url=registry_url, redis_url=service_redis.url, stock=False)
    config = yaml.safe_load((path / "feature_store.yaml").read_text())
    config["project"] = "push_extra"
    (path / "feature_store.yaml").write_text(yaml.safe_dump(config))
    feast_cli(path, service_redis.url, registry_url, "apply")
    repo = Repo(path=path, registry_url=registry_url, redis_url=service_redis.url, end=WHEN)
    client = AppClient(create_app(make_settings(repo)))
    try:
        yield client, path
    finally:
        client.close()


@pytest.fixture
def stock(tmp_path: Path) -> FeatureStore:
    path = _repo_dir(tmp_path / "stock")
    config = {
        "project": "push_extra",
        "provider": "local",
        "registry": "data/registry.db",
        "online_store": {"type": "sqlite", "path": "data/online.db"},
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }
    (path / "feature_store.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTORE_")}
    env["PYTHONPATH"] = str(ROOT)
    feast = Path(sys.executable).parent / "feast"
    subprocess.run([str(feast), "apply"], cwd=path, env=env, check=True, capture_output=True)
    return FeatureStore(repo_path=str(path))


def _frame(df: dict[str, list[Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(df)
    for column in ("event_timestamp", "created"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _rows(path: Path) -> list[dict[str, Any]]:
    table = pq.read_table(source_files(str(path / "data" / "trips.parquet")))
    rows = table.select(SOURCE.column_names).to_pylist()
    return sorted(rows, key=lambda r: r["driver_id"])


def _push(client: AppClient, df: dict[str, list[Any]]) -> Any:
    return client.post("/push", json={"push_source_name": "trips_push", "df": df, "to": "offline"})


def test_offline_push_with_the_unused_columns_writes_what_stock_writes(
    ours: tuple[AppClient, Path], stock: FeatureStore
) -> None:
    client, path = ours
    df = {**PUSHED, **UNUSED}
    resp = _push(client, df)
    assert resp.status_code == 200, resp.text
    assert resp.json()["offline_written"] == 2
    stock.push("trips_push", _frame(df)[SOURCE.column_names], to=PushMode.OFFLINE)
    stock_rows = _rows(Path(stock.repo_path))
    our_rows = [r for r in _rows(path) if r["driver_id"] in (1, 2, 3)]
    assert our_rows == stock_rows
    assert [r["note"] for r in our_rows] == ["seed", "a", None]
    assert [r["region_id"] for r in our_rows] == [11, 12, 13]


def test_offline_push_without_the_unused_columns_writes_nulls_where_stock_refuses(
    ours: tuple[AppClient, Path], stock: FeatureStore
) -> None:
    client, path = ours
    df = {**PUSHED, "driver_id": [4, 5]}
    with pytest.raises(ValueError, match="missing_expected_columns"):
        stock.push("trips_push", _frame(df), to=PushMode.OFFLINE)
    resp = _push(client, df)
    assert resp.status_code == 200, resp.text
    rows = [r for r in _rows(path) if r["driver_id"] in (4, 5)]
    assert [(r["conv_rate"], r["trip_count"], r["note"], r["region_id"]) for r in rows] == [
        (0.25, 4, None, None),
        (0.75, 5, None, None),
    ]
    schema = pq.read_schema(source_files(str(path / "data" / "trips.parquet"))[-1])
    assert schema.field("region_id").type == pa.int32()


def test_offline_push_with_a_mistyped_unused_column_is_refused_whole(
    ours: tuple[AppClient, Path],
) -> None:
    client, path = ours
    before = len(source_files(str(path / "data" / "trips.parquet")))
    resp = _push(client, {**PUSHED, "driver_id": [6, 7], "region_id": ["north", "south"]})
    assert resp.status_code == 422, resp.text
    assert "region_id" in resp.json()["error"]["message"]
    assert len(source_files(str(path / "data" / "trips.parquet"))) == before
    typo = _push(client, {**PUSHED, "driver_id": [8, 9], "regoin_id": [1, 2]})
    assert typo.status_code == 422
    assert "regoin_id" in typo.json()["error"]["message"]


def test_online_push_with_the_unused_columns_is_taken_like_stock(
    ours: tuple[AppClient, Path], stock: FeatureStore
) -> None:
    client, _ = ours
    fresh = (datetime.now(UTC) - timedelta(hours=1)).isoformat()  # within the view's TTL
    df = {**PUSHED, "driver_id": [10, 11], **UNUSED}
    df["event_timestamp"] = df["created"] = [fresh, fresh]
    stock.push("trips_push", _frame(df), to=PushMode.ONLINE)
    expected = stock.get_online_features(
        features=["trips:conv_rate", "trips:trip_count"], entity_rows=[{"driver_id": 10}]
    ).to_dict()
    resp = client.post("/push", json={"push_source_name": "trips_push", "df": df, "to": "online"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["written"] == 2
    got = client.post(
        "/get-online-features",
        json={"entities": {"driver_id": [10]}, "features": ["trips:conv_rate", "trips:trip_count"]},
    ).json()
    values = {
        n: r["values"]
        for n, r in zip(got["metadata"]["feature_names"], got["results"], strict=True)
    }
    assert values["trip_count"] == expected["trip_count"] == [4]
    assert values["conv_rate"] == expected["conv_rate"] == [0.25]
