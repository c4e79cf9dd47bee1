"""Entity-less feature views (Feast's ``entities=[]``): materialized under Feast's
``__dummy_id`` key and served over HTTP next to keyed views, as stock Feast does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64, Int64
from feast.value_type import ValueType

from service.app import create_app
from tests.online_store.feast_repo import DUCKDB, RepoSpec, make_store
from tests.service.conftest import AppClient, Repo, columns, make_settings, rfc3339

T0 = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)


def _objects(root: Path) -> list[Any]:
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    keyed = FeatureView(
        name="driver_x",
        entities=[driver],
        schema=[Field(name="driver_id", dtype=Int64), Field(name="x", dtype=Float64)],
        source=FileSource(path=str(root / "d.parquet"), timestamp_field="event_ts"),
        ttl=timedelta(0),
    )
    platform = FeatureView(
        name="platform",
        entities=[],
        schema=[Field(name="surge", dtype=Float64)],
        source=FileSource(path=str(root / "g.parquet"), timestamp_field="event_ts"),
        ttl=timedelta(0),
    )
    return [driver, keyed, platform]


def _data(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    ts = pa.timestamp("us", tz="UTC")
    pq.write_table(
        pa.table(
            {
                "driver_id": pa.array([1, 2], pa.int64()),
                "x": [1.0, 2.0],
                "event_ts": pa.array([T0, T0], ts),
            }
        ),
        root / "d.parquet",
    )
    # The latest platform row wins; the other is older.
    pq.write_table(
        pa.table(
            {
                "surge": [1.5, 1.2],
                "event_ts": pa.array([T0 - timedelta(hours=2), T0], ts),
            }
        ),
        root / "g.parquet",
    )


@pytest.fixture
def repos(tmp_path: Path, redis_url: str) -> tuple[Any, Any, Repo]:
    _data(tmp_path / "data")
    base = redis_url.rsplit("/", 1)[0]
    stock = make_store(
        tmp_path / "stock",
        RepoSpec("p", f"{base}/1", False, False),
        lambda: _objects(tmp_path / "data"),
    )
    ours = make_store(
        tmp_path / "ours",
        RepoSpec("p", f"{base}/2", True, True, offline=DUCKDB),
        lambda: _objects(tmp_path / "data"),
    )
    for store in (stock, ours):
        store.materialize(T0 - timedelta(days=1), T0 + timedelta(seconds=1))
    repo = Repo(
        path=tmp_path / "ours",
        registry_url=f"sqlite:///{tmp_path / 'ours' / 'registry.db'}",
        redis_url=f"{base}/2",
        end=T0,
    )
    return stock, ours, repo


def _hashes(url: str) -> dict[bytes, dict[bytes, bytes]]:
    client = redis.Redis.from_url(url)
    try:
        return {key: client.hgetall(key) for key in client.scan_iter()}
    finally:
        client.close()


def test_entityless_view_materializes_the_same_bytes_as_stock(
    repos: tuple[Any, Any, Repo],
) -> None:
    stock, _, repo = repos
    base = repo.redis_url.rsplit("/", 1)[0]
    theirs, mine = _hashes(f"{base}/1"), _hashes(f"{base}/2")
    assert len(theirs) == 3  # two drivers and the `__dummy_id` key
    assert mine == theirs
    want = stock.get_online_features(["platform:surge"], [{"driver_id": 1}]).to_dict()
    assert want["surge"] == [1.2]


def test_entityless_features_are_served_next_to_keyed_ones(
    repos: tuple[Any, Any, Repo],
) -> None:
    stock, _, repo = repos
    client = AppClient(create_app(make_settings(repo)))
    try:
        resp = client.post(
            "/get-online-features",
            json={"entities": {"driver_id": [1, 3]}, "features": ["driver_x:x", "platform:surge"]},
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["metadata"]["feature_names"] == ["driver_id", "x", "surge"]
        cols = columns(body)
        assert cols["surge"]["values"] == [1.2, 1.2]
        assert cols["surge"]["statuses"] == ["PRESENT", "PRESENT"]
        assert cols["surge"]["event_timestamps"] == [rfc3339(T0)] * 2
        assert cols["x"]["statuses"] == ["PRESENT", "NOT_FOUND"]
        want = stock.get_online_features(
            ["driver_x:x", "platform:surge"], [{"driver_id": 1}, {"driver_id": 3}]
        ).to_dict()
        assert cols["surge"]["values"] == want["surge"]
        assert cols["x"]["values"][0] == want["x"][0]

        # Only entity-less features: the rows come from whatever entity column is given,
        # echoed like Feast echoes a known join key.
        resp = client.post(
            "/get-online-features",
            json={"entities": {"driver_id": [7]}, "features": ["platform:surge"]},
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["metadata"]["feature_names"] == ["driver_id", "surge"]
        assert columns(resp.json())["surge"]["values"] == [1.2]

        resp = client.post(
            "/get-online-features", json={"entities": {}, "features": ["platform:surge"]}
        )
        assert resp.status_code == 422
        assert "entity-less" in resp.json()["error"]["message"]
    finally:
        client.close()


def test_writes_to_an_entityless_view_are_read_back(repos: tuple[Any, Any, Repo]) -> None:
    _, _, repo = repos
    client = AppClient(create_app(make_settings(repo)))
    later = T0 + timedelta(minutes=5)
    try:
        resp = client.post(
            "/write-to-online-store",
            json={
                "feature_view_name": "platform",
                "df": {"surge": [2.5], "event_ts": [later.isoformat()]},
            },
        )
        assert resp.status_code == 200, resp.text
        resp = client.post(
            "/get-online-features",
            json={"entities": {"driver_id": [1, 2]}, "features": ["platform:surge"]},
        )
        assert resp.status_code == 200, resp.text
        cols = columns(resp.json())
        assert cols["surge"]["values"] == [2.5, 2.5]
        assert cols["surge"]["event_timestamps"] == [rfc3339(later)] * 2
    finally:
        client.close()


def test_entityless_push_refuses_a_real_dummy_key(repos: tuple[Any, Any, Repo]) -> None:
    _, _, repo = repos
    client = AppClient(create_app(make_settings(repo)))
    try:
        resp = client.post(
            "/write-to-online-store",
            json={
                "feature_view_name": "platform",
                "df": {"__dummy_id": ["x"], "surge": [9.0], "event_ts": [T0.isoformat()]},
            },
        )
        assert resp.status_code == 422
        assert "entity-less" in resp.json()["error"]["message"]
        resp = client.post(
            "/get-online-features",
            json={"entities": {"driver_id": [1]}, "features": ["platform:surge"]},
        )
        assert columns(resp.json())["surge"]["values"] == [1.2]  # nothing written
    finally:
        client.close()
