"""Pandas-mode on-demand outputs of every type over HTTP: ours against stock ``feast serve``.

A UDF's column is often not of its schema's type (ints for a Float64 output, float64 for a
Float32 one, pandas' nullable Int64 with NA); ``feast serve`` converts each value for the
schema type, and so do we, also for types the JSON cannot carry as they are (bytes, lists,
timestamps) and for a view whose only source is request data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from online_store.embedded import EmbeddedRedis
from tests.service.conftest import AppClient, columns, new_repo, ours_and_feast_serve

DEFINITIONS = """
from datetime import timedelta
import pandas as pd
from feast import Entity, FeatureView, Field, FileSource, RequestSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import (Array, Bool, Bytes, Float32, Float64, Int32, Int64, String,
                         UnixTimestamp)

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
ot_stats = FeatureView(
    name="ot_stats", entities=[driver], ttl=timedelta(days=30),
    schema=[Field(name="rate", dtype=Float64), Field(name="trips", dtype=Int64)],
    source=FileSource(name="ot_source", path="data/ot_stats.parquet",
                      timestamp_field="event_timestamp"),
)
ot_trip = RequestSource(name="ot_trip", schema=[Field(name="km", dtype=Float64)])


@on_demand_feature_view(
    sources=[ot_stats, ot_trip],
    schema=[Field(name="as_double", dtype=Float64), Field(name="as_float32", dtype=Float32),
            Field(name="nullable", dtype=Float64), Field(name="as_int64", dtype=Int64),
            Field(name="as_int32", dtype=Int32), Field(name="as_string", dtype=String),
            Field(name="flag", dtype=Bool), Field(name="raw", dtype=Bytes),
            Field(name="vector", dtype=Array(Float64)), Field(name="seen", dtype=UnixTimestamp)],
    mode="pandas",
)
def ot_typed(inputs: pd.DataFrame) -> pd.DataFrame:
    # `feast apply` checks each output's dtype on one sample row; a UDF's dtypes may then
    # follow its data (here the row count stands in for that) and no longer be the schema's.
    serving = len(inputs) > 1
    out = pd.DataFrame(index=inputs.index)
    trips = inputs["trips"].fillna(0).astype("int64")
    out["as_double"] = trips if serving else trips * 1.0  # int64 for a Float64 output
    out["as_float32"] = (inputs["km"] / 10).astype("float32")
    out["nullable"] = inputs["trips"].astype("Int64") if serving else inputs["km"]  # NA
    out["as_int64"] = inputs["trips"]  # float64 with NaN once a stored trips is null
    out["as_int32"] = (trips * 2).astype("int32")
    out["as_string"] = trips if serving else trips.astype(str)  # int64 for a String output
    out["flag"] = inputs["km"] > 10
    out["raw"] = [f"t{t}".encode() for t in trips]
    out["vector"] = [[float(k), float(t)] for k, t in zip(inputs["km"], trips)]
    out["seen"] = pd.Timestamp("2026-01-02T03:04:05", tz="UTC")
    return out


@on_demand_feature_view(
    sources=[ot_trip],
    schema=[Field(name="km_rounded", dtype=Int64), Field(name="km_text", dtype=String),
            Field(name="km_double", dtype=Float64)],
    mode="pandas",
)
def ot_request_only(inputs: pd.DataFrame) -> pd.DataFrame:
    serving = len(inputs) > 1
    km = inputs["km"]
    out = pd.DataFrame(index=inputs.index)
    out["km_rounded"] = km if serving else km.astype("int64")  # floats for an Int64 output
    out["km_text"] = km if serving else km.astype(str)  # floats for a String output
    out["km_double"] = km.round().astype("int64") if serving else km
    return out
"""
TYPED = ("as_double", "as_float32", "nullable", "as_int64", "as_int32", "as_string", "flag",
         "raw", "vector", "seen")  # fmt: skip
REQUEST_ONLY = ("km_rounded", "km_text", "km_double")
ENTITIES = {"driver_id": [1, 2, 3, 99], "km": [4.0, 12.5, 2.25, 3.0]}


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, service_redis: EmbeddedRedis
) -> Iterator[tuple[AppClient, httpx.Client]]:
    path, when = new_repo(tmp_path_factory, "odfv-outputs", DEFINITIONS)
    rows = {
        "driver_id": pa.array([1, 2, 3], pa.int64()),
        "event_timestamp": pa.array([when] * 3, pa.timestamp("us", tz="UTC")),
        "rate": pa.array([0.5, None, 0.25], pa.float64()),
        "trips": pa.array([3, None, 7], pa.int64()),
    }
    pq.write_table(pa.table(rows), path / "data" / "ot_stats.parquet")
    with ours_and_feast_serve(path, project="odfvout", redis_url=service_redis.url, when=when) as (
        ours,
        feast,
    ):
        yield ours, feast


def _typed(values: list[Any]) -> list[tuple[str, Any]]:
    return [(type(v).__name__, v) for v in values]


def _both(
    servers: tuple[AppClient, httpx.Client], features: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    ours, feast = servers
    body = {"features": features, "entities": ENTITIES}
    mine, theirs = (
        ours.post("/get-online-features", json=body),
        feast.post("/get-online-features", json=body),
    )
    assert mine.status_code == 200, mine.text
    assert theirs.status_code == 200, theirs.text
    return columns(mine.json()), columns(theirs.json())


@pytest.mark.parametrize("output", TYPED)
def test_each_pandas_output_type_answers_what_feast_serve_answers(
    servers: tuple[AppClient, httpx.Client], output: str
) -> None:
    got, expected = _both(servers, [f"ot_typed:{output}"])
    assert _typed(got[output]["values"]) == _typed(expected[output]["values"])


def test_pandas_outputs_are_converted_for_their_schema_type(
    servers: tuple[AppClient, httpx.Client],
) -> None:
    """The values themselves, so a change on both sides cannot pass unseen."""
    got, _ = _both(servers, [f"ot_typed:{o}" for o in TYPED])
    assert got["as_double"]["values"] == [3.0, 0.0, 7.0, 0.0]
    assert all(type(v) is float for v in got["as_double"]["values"])
    assert got["as_float32"]["values"][0] == float(np.float32(0.4)) != 0.4  # float32's 0.4
    assert got["nullable"]["values"] == [3.0, None, 7.0, None]
    assert got["as_int64"]["values"] == [3, None, 7, None]
    assert got["as_string"]["values"] == ["3", "0", "7", "0"]
    assert got["raw"]["values"] == ["dDM=", "dDA=", "dDc=", "dDA="]  # base64 of b"t3"...
    assert got["vector"]["values"] == [[4.0, 3.0], [12.5, 0.0], [2.25, 7.0], [3.0, 0.0]]


def test_a_view_of_request_data_only_answers_what_feast_serve_answers(
    servers: tuple[AppClient, httpx.Client],
) -> None:
    got, expected = _both(servers, [f"ot_request_only:{o}" for o in REQUEST_ONLY])
    for output in REQUEST_ONLY:
        assert _typed(got[output]["values"]) == _typed(expected[output]["values"]), output
    assert got["km_rounded"]["values"] == [4, 12, 2, 3]
    assert got["km_text"]["values"] == ["4.0", "12.5", "2.25", "3.0"]
    assert got["km_double"]["values"] == [4.0, 12.0, 2.0, 3.0]
