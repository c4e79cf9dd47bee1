"""Concurrent lookups of a view tagged row-wise share one call of its transformation, and
each still gets the answer (or the refusal) it gets alone, the answer ``feast serve`` gives."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import Field, OnDemandFeatureView
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String

from foundation.errors import InvalidRequestError
from online_store.embedded import EmbeddedRedis
from online_store.read_columns import FeatureColumn
from online_store.reader import ReadResult
from service.odfv import ROW_WISE_TAG, OdfvStep, run_odfv
from service.udf_runner import ODFV_THREAD_ROWS, UdfRunner
from tests.service.conftest import AppClient, columns, new_repo, ours_and_feast_serve
from tests.service.test_odfv import _step, stats, trip

ROW_WISE = {ROW_WISE_TAG: "true"}
SCHEMA = [Field(name="y", dtype=Float64), Field(name="x_dtype", dtype=String),
          Field(name="rows_in_call", dtype=Int64)]  # fmt: skip


def _scored(inputs: pd.DataFrame) -> pd.DataFrame:
    if (inputs["x"] < 0).any():
        raise ValueError("x must not be negative")
    out = pd.DataFrame()
    out["y"] = inputs["a"].astype("float64").fillna(-1.0) * inputs["x"] + inputs["stats__b"]
    out["x_dtype"] = str(inputs["x"].dtype)  # an int x alone is int64, a float one float64
    out["rows_in_call"] = len(inputs)  # not row-wise: shows the test how calls were shared
    return out


@on_demand_feature_view(sources=[stats, trip], schema=SCHEMA, mode="pandas", tags=ROW_WISE)
def rw_scored(inputs: pd.DataFrame) -> pd.DataFrame:
    return _scored(inputs)


@on_demand_feature_view(sources=[stats, trip], schema=SCHEMA, mode="pandas")
def plain_scored(inputs: pd.DataFrame) -> pd.DataFrame:
    return _scored(inputs)


@on_demand_feature_view(sources=[stats, trip], schema=SCHEMA, mode="python", tags=ROW_WISE)
def rw_python(inputs: dict[str, Any]) -> dict[str, Any]:
    return {
        "y": [
            (a if a is not None else -1.0) * x
            for a, x in zip(inputs["a"], inputs["x"], strict=True)
        ],
        "x_dtype": [type(x).__name__ for x in inputs["x"]],
        "rows_in_call": [len(inputs["x"])] * len(inputs["x"]),
    }


def _build(view: OnDemandFeatureView) -> OdfvStep:
    outputs = tuple((name, name) for name in ("y", "x_dtype", "rows_in_call"))
    return OdfvStep.build(view, _step(False).inputs, outputs)


def _lookup(i: int, rows: int = 1, x: Any = None) -> tuple[dict[str, list[Any]], ReadResult]:
    """Request ``i``: its entities and request data, and what the read gave for it."""
    a = [0.5 * (i + r) for r in range(rows)]
    read = {
        "stats:a": a,
        "stats:b": [i * 10 + r for r in range(rows)],
        "stats:tag": [f"t{i}"] * rows,
    }
    result = ReadResult(
        {
            key: FeatureColumn(values, ["PRESENT"] * rows, [None] * rows)
            for key, values in read.items()
        }
    )
    xs = [x if x is not None else (i + r if i % 3 == 0 else i + r + 0.25) for r in range(rows)]
    return {"rider_id": list(range(rows)), "x": xs}, result


def _concurrently(step: OdfvStep, lookups: list[Any], runner: UdfRunner) -> list[Any]:
    async def all_at_once() -> list[Any]:
        calls = [
            runner.transform(
                step, entities, result, rows=len(entities["x"]), full_feature_names=False
            )
            for entities, result in lookups
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    return asyncio.run(all_at_once())


def _alone(step: OdfvStep, entities: dict[str, list[Any]], result: ReadResult) -> Any:
    try:
        return run_odfv(step, entities, result, full_feature_names=False)
    except InvalidRequestError as exc:
        return exc


def _without_call_size(answer: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {k: v for k, v in answer.items() if k != "rows_in_call"}


@pytest.mark.parametrize("view", [rw_scored, rw_python], ids=["pandas", "python"])
def test_concurrent_lookups_share_a_call_and_each_gets_its_own_answer(
    view: OnDemandFeatureView,
) -> None:
    step = _build(view)
    lookups = [_lookup(i) for i in range(24)]
    runner = UdfRunner(2)
    try:
        answers = _concurrently(step, lookups, runner)
    finally:
        runner.close()
    for (entities, result), answer in zip(lookups, answers, strict=True):
        assert _without_call_size(answer) == _without_call_size(_alone(step, entities, result))
    # Requests whose x values are ints (every third) see an int64 column, as alone: they are
    # not put in one call with the float ones, whose call holds all of theirs.
    calls = {(a["x_dtype"][0], a["rows_in_call"][0]) for a in answers}
    expected = {"int64": 8, "float64": 16} if view is rw_scored else {"int": 8, "float": 16}
    assert calls == set(expected.items())


def test_a_view_without_the_tag_is_called_once_per_lookup() -> None:
    step = _build(plain_scored)
    runner = UdfRunner(2)
    try:
        answers = _concurrently(step, [_lookup(i) for i in range(12)], runner)
    finally:
        runner.close()
    assert [a["rows_in_call"] for a in answers] == [[1]] * 12


def test_a_lookup_the_transformation_refuses_fails_alone() -> None:
    """One request's data makes the UDF raise: the shared call is made again one request
    at a time, so that request gets its 4xx and the others their answers."""
    step = _build(rw_scored)
    lookups = [_lookup(i, x=-1.0 if i == 4 else 1.5) for i in range(8)]
    runner = UdfRunner(2)
    try:
        answers = _concurrently(step, lookups, runner)
    finally:
        runner.close()
    assert isinstance(answers[4], InvalidRequestError)
    assert "x must not be negative" in str(answers[4])
    for i, ((entities, result), answer) in enumerate(zip(lookups, answers, strict=True)):
        if i != 4:
            assert answer == _alone(step, entities, result)  # rows_in_call 1 too


def test_a_pandas_lookup_with_nulls_in_its_table_is_not_batched() -> None:
    """A null makes Arrow, not NumPy, read the column: its dtype could differ in a batch."""
    step = _build(rw_scored)
    lookups = [_lookup(i, x=2.5) for i in range(6)]
    nulled = lookups[2][1]
    nulled.columns["stats:a"] = FeatureColumn([None], ["NOT_FOUND"], [None])
    runner = UdfRunner(2)
    try:
        answers = _concurrently(step, lookups, runner)
    finally:
        runner.close()
    assert [a["rows_in_call"][0] for a in answers] == [5, 5, 1, 5, 5, 5]
    assert answers[2] == _alone(step, lookups[2][0], nulled)
    assert answers[2]["y"] == [-2.5 + 20]  # the null read as NaN, filled with -1


def test_a_shared_call_holds_fewer_rows_than_a_thread_call() -> None:
    step = _build(rw_scored)
    lookups = [_lookup(i, rows=20, x=1.5) for i in range(7)]
    runner = UdfRunner(2)
    try:
        answers = _concurrently(step, lookups, runner)
    finally:
        runner.close()
    assert [a["rows_in_call"][0] for a in answers] == [60] * 6 + [20]
    assert ODFV_THREAD_ROWS > 60
    for (entities, result), answer in zip(lookups, answers, strict=True):
        assert _without_call_size(answer) == _without_call_size(_alone(step, entities, result))


DEFINITIONS = """
from datetime import timedelta
import pandas as pd
from feast import Entity, FeatureView, Field, FileSource, RequestSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
rb_stats = FeatureView(
    name="rb_stats", entities=[driver], ttl=timedelta(days=30),
    schema=[Field(name="rate", dtype=Float64), Field(name="trips", dtype=Int64)],
    source=FileSource(name="rb_source", path="data/rb_stats.parquet",
                      timestamp_field="event_timestamp"),
)
rb_trip = RequestSource(name="rb_trip", schema=[Field(name="km", dtype=Float64)])


@on_demand_feature_view(
    sources=[rb_stats, rb_trip],
    schema=[Field(name="fare", dtype=Float64), Field(name="band", dtype=String)],
    mode="pandas", tags={"featurestore.row_wise": "true"},
)
def rb_fare(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=inputs.index)
    out["fare"] = 2.5 + inputs["km"] * inputs["rate"].fillna(1.0)
    out["band"] = (inputs["trips"].fillna(0) // 3).astype("int64").astype(str)
    return out


@on_demand_feature_view(
    sources=[rb_stats, rb_trip],
    schema=[Field(name="per_trip", dtype=Float64)],
    mode="python", tags={"featurestore.row_wise": "true"},
)
def rb_per_trip(inputs: dict) -> dict:
    return {"per_trip": [k / (t or 1) for k, t in zip(inputs["km"], inputs["trips"])]}
"""
FEATURES = ["rb_fare:fare", "rb_fare:band", "rb_per_trip:per_trip", "rb_stats:rate"]


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, service_redis: EmbeddedRedis
) -> Iterator[tuple[AppClient, httpx.Client]]:
    path, when = new_repo(tmp_path_factory, "udf-batches", DEFINITIONS)
    rows = {
        "driver_id": pa.array([1, 2, 3, 4], pa.int64()),
        "event_timestamp": pa.array([when] * 4, pa.timestamp("us", tz="UTC")),
        "rate": pa.array([0.5, None, 0.25, 2.0], pa.float64()),
        "trips": pa.array([3, None, 7, 12], pa.int64()),
    }
    pq.write_table(pa.table(rows), path / "data" / "rb_stats.parquet")
    with ours_and_feast_serve(path, project="udfbatch", redis_url=service_redis.url, when=when) as (
        ours,
        feast,
    ):
        yield ours, feast


def test_concurrent_lookups_answer_what_feast_serve_answers(
    servers: tuple[AppClient, httpx.Client],
) -> None:
    """Sixteen lookups at once (one and two entity rows, known and unknown drivers, int and
    float request data), answered by ours concurrently and by ``feast serve`` one by one."""
    ours, feast = servers
    bodies = [
        {
            "features": FEATURES,
            "entities": {
                "driver_id": [1 + i % 5, 4] if i % 4 == 0 else [1 + i % 5],
                # Ints alone or floats alone: Feast reads [0, 7.25] as ints, 7.25 as 7.
                "km": [i + 0.5, 7.25] if i % 4 == 0 else [i + (0.5 if i % 2 else 0)],
            },
        }
        for i in range(16)
    ]

    async def all_at_once() -> list[httpx.Response]:
        calls = [ours.client.post("/get-online-features", json=body) for body in bodies]
        return await asyncio.gather(*calls)

    mine = ours.run(all_at_once())
    for body, answer in zip(bodies, mine, strict=True):
        theirs = feast.post("/get-online-features", json=body)
        assert answer.status_code == 200, answer.text
        assert theirs.status_code == 200, theirs.text
        got, expected = columns(answer.json()), columns(theirs.json())
        for name in ("fare", "band", "per_trip", "rate"):
            assert got[name]["values"] == expected[name]["values"], (name, body)
    # Each lookup is counted once, in the call that answered it (alone when its table held
    # a null: an unknown driver, or driver 2's).
    metrics = ours.get("/metrics").text
    for view in ("rb_fare", "rb_per_trip"):
        assert f'featurestore_odfv_shared_call_lookups_sum{{feature_view="{view}"}} 16.0' in metrics
