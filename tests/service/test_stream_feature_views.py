"""Stream feature views are served, pushed to, joined and materialized like batch views.

Feast lists ``StreamFeatureView``s apart from batch views but reads them online, pushes
to them through their ``PushSource`` and joins them into training sets; a service that
only listed batch views answered 404 for their features and 422 for their pushes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import FeatureStore

from offline_store.compact import compact_feature_views
from offline_store.sdk import get_training_dataset
from online_store.embedded import EmbeddedRedis
from pipelines.config import StoreConfig
from pipelines.materialize import materialize_view, online_feature_views
from tests.service.conftest import AppClient, columns, new_repo, ours_and_feast_serve
from tests.service.differential_helpers import post_both

DEFINITIONS = """
from datetime import timedelta
from feast import Entity, Field, FileSource, PushSource, ValueType
from feast.stream_feature_view import StreamFeatureView
from feast.types import Float64, Int64

rider = Entity(name="rider", join_keys=["rider_id"], value_type=ValueType.INT64)
batch = FileSource(name="clicks_batch", path="data/clicks.parquet",
                   timestamp_field="event_timestamp")
clicks_push = PushSource(name="clicks_push", batch_source=batch)
clicks = StreamFeatureView(
    name="clicks", entities=[rider], ttl=timedelta(days=1), source=clicks_push,
    schema=[Field(name="n", dtype=Int64), Field(name="rate", dtype=Float64)],
    timestamp_field="event_timestamp",
)
"""
N = {1: 10, 2: 20, 3: 30}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, datetime]:
    path, when = new_repo(tmp_path_factory, "stream-views", DEFINITIONS)
    table = {
        "rider_id": pa.array(list(N), pa.int64()),
        "event_timestamp": pa.array([when] * len(N), pa.timestamp("us", tz="UTC")),
        "n": pa.array(list(N.values()), pa.int64()),
        "rate": pa.array([n / 100 for n in N.values()]),
    }
    pq.write_table(pa.table(table), path / "data" / "clicks.parquet")
    return path, when


@pytest.fixture(scope="module")
def servers(
    written: tuple[Path, datetime], service_redis: EmbeddedRedis
) -> Iterator[tuple[AppClient, httpx.Client]]:
    path, when = written
    with ours_and_feast_serve(path, project="sfv", redis_url=service_redis.url, when=when) as both:
        yield both


def test_stream_view_reads_match_feast_serve(servers: tuple[AppClient, httpx.Client]) -> None:
    ours, feast = servers
    body = {"entities": {"rider_id": [1, 3, 99]}, "features": ["clicks:n", "clicks:rate"]}
    mine, _ = post_both(ours, feast, body)
    cols = columns(mine)
    assert cols["n"]["values"] == [10, 30, None]
    assert cols["n"]["statuses"] == ["PRESENT", "PRESENT", "NOT_FOUND"]
    listed = [v["name"] for v in ours.get("/registry/feature-views").json()]
    assert listed == ["clicks"]


def test_push_to_a_stream_view_is_read_back(servers: tuple[AppClient, httpx.Client]) -> None:
    ours, _ = servers
    when = (datetime.now(UTC) - timedelta(minutes=5)).replace(microsecond=0)
    df = {"rider_id": [7], "event_timestamp": [when.isoformat()], "n": [70], "rate": [0.7]}
    body = {"push_source_name": "clicks_push", "df": df, "to": "online_and_offline"}
    resp = ours.post("/push", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["feature_views"] == ["clicks"]
    assert resp.json()["offline_written"] == 1
    read = ours.post(
        "/get-online-features", json={"entities": {"rider_id": [7]}, "features": ["clicks:n"]}
    )
    assert columns(read.json())["n"]["values"] == [70]


def test_training_set_with_a_stream_view_equals_feast(
    written: tuple[Path, datetime], servers: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, when = written  # applied by ``servers``
    monkeypatch.setenv("FEATURESTORE_REGISTRY_URL", f"sqlite:///{path / 'data' / 'registry.db'}")
    entities = pd.DataFrame(
        {"rider_id": [3, 1, 99], "event_timestamp": [when + timedelta(minutes=1)] * 3}
    )
    ours = get_training_dataset(entities, ["clicks:n", "clicks:rate"], repo_path=path)
    stock = FeatureStore(repo_path=str(path)).get_historical_features(
        entity_df=entities, features=["clicks:n", "clicks:rate"]
    )
    expected = stock.to_df()
    assert list(ours["n"].astype("Int64")) == [30, 10, pd.NA]
    pd.testing.assert_frame_equal(ours.reset_index(drop=True), expected.reset_index(drop=True))


def test_pipelines_materialize_a_stream_view(
    written: tuple[Path, datetime], service_redis: EmbeddedRedis, servers: object
) -> None:
    path, when = written
    config = StoreConfig(
        repo_path=path,
        registry_url=f"sqlite:///{path / 'data' / 'registry.db'}",
        redis_url=service_redis.url,
    )
    assert online_feature_views(config) == ["clicks"]
    result = materialize_view(config, "clicks", when + timedelta(hours=1))
    assert result["feature_view"] == "clicks"


def test_compaction_folds_a_stream_views_pushed_parts(
    written: tuple[Path, datetime],
    servers: tuple[AppClient, httpx.Client],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, when = written
    monkeypatch.setenv("FEATURESTORE_REGISTRY_URL", f"sqlite:///{path / 'data' / 'registry.db'}")
    ours, _ = servers
    df = {"rider_id": [8], "event_timestamp": [when.isoformat()], "n": [80], "rate": [0.8]}
    body = {"push_source_name": "clicks_push", "df": df, "to": "offline"}
    assert ours.post("/push", json=body).status_code == 200
    (result,) = compact_feature_views(FeatureStore(repo_path=str(path)), ["clicks"])
    assert result.parts_merged >= 1
    assert pq.read_table(path / "data" / "clicks.parquet").num_rows == result.rows >= len(N) + 1
