"""Python-mode on-demand views over HTTP: ours against stock ``feast serve`` on one repo.

Same values and the same JSON types as ``feast serve`` (an int the UDF returns for a Float64
output is 7.0 in both), stored nulls and missing entities handed to the UDF as None. Under
full feature names Feast 0.67 drops a python-mode view's outputs from its answer (the UDF
returns short names and Feast looks for full ones); ours answers them under the full names.
A training set through our offline store gives the UDF the same values as serving does
(Feast's file store hands it pandas floats for an Int64 column with nulls: "gold:3.0"
offline against "gold:3" online).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import FeatureStore

from online_store.embedded import EmbeddedRedis
from tests.service.conftest import (
    AppClient,
    columns,
    new_repo,
    ours_and_feast_serve,
)

DEFINITIONS = '''
from datetime import timedelta
from typing import Any
from feast import Entity, FeatureView, Field, FileSource, RequestSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Bool, Bytes, Float64, Int64, String

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
pm_stats = FeatureView(
    name="pm_stats", entities=[driver], ttl=timedelta(days=30),
    schema=[Field(name="conv_rate", dtype=Float64), Field(name="trips", dtype=Int64),
            Field(name="tier", dtype=String)],
    source=FileSource(name="pm_source", path="data/pm_stats.parquet",
                      timestamp_field="event_timestamp", created_timestamp_column="created"),
)
trip = RequestSource(name="pm_trip", schema=[Field(name="distance_km", dtype=Float64)])


@on_demand_feature_view(
    sources=[pm_stats, trip],
    schema=[Field(name="score", dtype=Float64), Field(name="label", dtype=String),
            Field(name="long_trip", dtype=Bool), Field(name="tier_bytes", dtype=Bytes)],
    mode="python",
)
def pm_scored(inputs: dict[str, Any]) -> dict[str, Any]:
    """Reads short and full names; an int where the schema says Float64 when conv_rate is null."""
    return {
        "score": [c * d if c is not None else (t if t is not None else 0)
                  for c, d, t in zip(inputs["conv_rate"], inputs["distance_km"],
                                     inputs["pm_stats__trips"])],
        "label": [f"{tier or 'none'}:{t}" for tier, t in zip(inputs["tier"], inputs["trips"])],
        "long_trip": [d > 10 for d in inputs["distance_km"]],
        "tier_bytes": [(tier or "").encode() for tier in inputs["tier"]],
    }
'''
OUTPUTS = ("score", "label", "long_trip", "tier_bytes")
FEATURES = [*(f"pm_scored:{o}" for o in OUTPUTS), "pm_stats:trips"]
ENTITIES = {"driver_id": [1, 2, 3, 4, 99], "distance_km": [4.0, 12.5, 2.0, 1.0, 3.0]}


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, service_redis: EmbeddedRedis
) -> Iterator[tuple[AppClient, httpx.Client, Path]]:
    path, when = new_repo(tmp_path_factory, "python-mode", DEFINITIONS)
    stamps = pa.array([when] * 4, pa.timestamp("us", tz="UTC"))
    rows = {
        "driver_id": pa.array([1, 2, 3, 4], pa.int64()),
        "event_timestamp": stamps,
        "created": stamps,
        "conv_rate": pa.array([0.5, None, 0.25, None], pa.float64()),
        "trips": pa.array([3, 7, None, None], pa.int64()),
        "tier": pa.array(["gold", None, "silver", "x"], pa.string()),
    }
    pq.write_table(pa.table(rows), path / "data" / "pm_stats.parquet")
    with ours_and_feast_serve(path, project="pymode", redis_url=service_redis.url, when=when) as (
        ours,
        feast,
    ):
        yield ours, feast, path


def _typed(values: list[Any]) -> list[tuple[str, Any]]:
    return [(type(v).__name__, v) for v in values]


def test_python_mode_view_answers_what_feast_serve_answers(
    servers: tuple[AppClient, httpx.Client, Path],
) -> None:
    ours, feast, _ = servers
    body = {"features": FEATURES, "entities": ENTITIES}
    mine = ours.post("/get-online-features", json=body)
    theirs = feast.post("/get-online-features", json=body)
    assert mine.status_code == 200, mine.text
    assert theirs.status_code == 200, theirs.text
    got, expected = columns(mine.json()), columns(theirs.json())
    assert got.keys() == expected.keys()
    for name in OUTPUTS:
        assert _typed(got[name]["values"]) == _typed(expected[name]["values"]), name
        assert got[name]["statuses"] == expected[name]["statuses"], name
    assert got["score"]["values"] == [2.0, 7.0, 0.5, 0.0, 0.0]
    assert got["label"]["values"] == ["gold:3", "none:7", "silver:None", "x:None", "none:None"]


def test_python_mode_outputs_come_back_under_full_feature_names(
    servers: tuple[AppClient, httpx.Client, Path],
) -> None:
    ours, feast, _ = servers
    short = columns(
        ours.post("/get-online-features", json={"features": FEATURES, "entities": ENTITIES}).json()
    )
    body = {"features": FEATURES, "entities": ENTITIES, "full_feature_names": True}
    mine = ours.post("/get-online-features", json=body)
    assert mine.status_code == 200, mine.text
    full = columns(mine.json())
    for name in OUTPUTS:
        assert _typed(full[f"pm_scored__{name}"]["values"]) == _typed(short[name]["values"])
    assert full["pm_stats__trips"]["values"] == short["trips"]["values"]
    # What we do better: Feast's answer has no column for the view's outputs.
    names = feast.post("/get-online-features", json=body).json()["metadata"]["feature_names"]
    assert "pm_scored__score" not in names


def test_training_sets_give_the_udf_what_serving_gives_it(
    servers: tuple[AppClient, httpx.Client, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, _, path = servers
    online = columns(
        ours.post("/get-online-features", json={"features": FEATURES, "entities": ENTITIES}).json()
    )
    monkeypatch.setenv("FEATURESTORE_REGISTRY_URL", f"sqlite:///{path / 'data' / 'registry.db'}")
    entity_df = pd.DataFrame({**ENTITIES, "event_timestamp": [datetime.now(UTC)] * 5})
    frame = (
        FeatureStore(repo_path=str(path))
        .get_historical_features(entity_df=entity_df, features=FEATURES)
        .to_df()
    )
    assert frame["driver_id"].tolist() == ENTITIES["driver_id"]
    for name in ("score", "label", "long_trip"):
        assert frame[name].tolist() == online[name]["values"], name
