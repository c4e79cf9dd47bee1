"""Concurrent lookups of a view tagged row-wise share one call of its transformation, and
each still gets the answer (or the refusal) it gets alone, the answer ``feast serve`` gives;
the promise is checked, and a view that breaks it stops sharing."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import Field, OnDemandFeatureView
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Bool, Float32, Float64, Int64, String
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.errors import InvalidRequestError
from online_store.embedded import EmbeddedRedis
from online_store.read_columns import FeatureColumn
from online_store.reader import ReadResult
from service.odfv import ROW_WISE_TAG, OdfvStep, run_odfv
from service.udf_batches import (
    CHECKED_CALLS,
    FAILED_CALLS,
    Table,
    batch_key,
    run_alone,
    run_shared,
)
from service.udf_runner import ODFV_THREAD_ROWS, PROOF_CALLS, UdfRunner
from tests.service.conftest import AppClient, columns, new_repo, ours_and_feast_serve
from tests.service.test_odfv import _step, stats, trip

ROW_WISE = {ROW_WISE_TAG: "true"}
SCHEMA = [Field(name="y", dtype=Float64), Field(name="x_dtype", dtype=String)]
CALLS: list[tuple[int, str]] = []  # (rows, thread name) of each call of the pandas UDFs


def _scored(inputs: pd.DataFrame) -> pd.DataFrame:
    CALLS.append((len(inputs), threading.current_thread().name))
    if (inputs["x"] < 0).any():
        raise ValueError("x must not be negative")
    out = pd.DataFrame()
    out["y"] = inputs["a"].astype("float64").fillna(-1.0) * inputs["x"] + inputs["stats__b"]
    out["x_dtype"] = str(inputs["x"].dtype)  # an int x alone is int64, a float one float64
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
            (a if a is not None else -1.0) * x + b
            for a, x, b in zip(inputs["a"], inputs["x"], inputs["stats__b"], strict=True)
        ],
        "x_dtype": [type(x).__name__ for x in inputs["x"]],
    }


@on_demand_feature_view(
    sources=[stats, trip], schema=[Field(name="n", dtype=Int64)], mode="pandas", tags=ROW_WISE
)
def rw_counting(inputs: pd.DataFrame) -> pd.DataFrame:
    """Tagged, but not row-wise: every row's answer is the frame's length."""
    return pd.DataFrame({"n": [len(inputs)] * len(inputs)})


@on_demand_feature_view(
    sources=[stats, trip], schema=[Field(name="big", dtype=Int64)], mode="pandas", tags=ROW_WISE
)
def rw_mapped(inputs: pd.DataFrame) -> pd.DataFrame:
    """Looks row-wise, is not: one unknown key makes the whole column float64 (NaN), and a
    large id loses its last digits in any frame that holds one."""
    out = pd.DataFrame(index=inputs.index)
    out["big"] = inputs["stats__b"].map({0: 2**60 + 1, 10: 7})
    return out


@on_demand_feature_view(
    sources=[stats, trip], schema=[Field(name="z", dtype=Float64)], mode="python", tags=ROW_WISE
)
def rw_flagged(inputs: dict[str, Any]) -> dict[str, Any]:
    """A bool for a Float64 output when x > 2: Feast refuses it by the column's first value."""
    return {"z": [x > 2 if x > 2 else float(x) for x in inputs["x"]]}


@on_demand_feature_view(sources=[stats, trip], schema=SCHEMA, mode="pandas", tags=ROW_WISE)
def rw_sorted(inputs: pd.DataFrame) -> pd.DataFrame:
    """Hands its rows back sorted: which request each belongs to is lost."""
    return _scored(inputs).sort_values("y")


class Recorder:
    """Counts what the runner reports (the shape of :class:`service.metrics.Metrics`)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.mismatches: list[str] = []

    def observe_shared_call(self, view: str, lookups: int) -> None:
        self.calls.append((view, lookups))

    def note_row_wise_mismatch(self, view: str) -> None:
        self.mismatches.append(view)


def _build(view: OnDemandFeatureView) -> OdfvStep:
    outputs = tuple((f.name, f.name) for f in view.features)
    return OdfvStep.build(view, _step(False).inputs, outputs)


def _lookup(i: int, rows: int = 1, x: Any = None) -> tuple[dict[str, list[Any]], ReadResult]:
    """Request ``i``: its entities and request data, and what the read gave for it."""
    read = {
        "stats:a": [0.5 * (i + r) for r in range(rows)],
        "stats:b": [i * 10 + r for r in range(rows)],
        "stats:tag": [f"t{i}"] * rows,
    }
    present, times = ["PRESENT"] * rows, [None] * rows
    result = ReadResult(
        {key: FeatureColumn(values, present, times) for key, values in read.items()}
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


def _past_the_checks(step: OdfvStep, runner: UdfRunner) -> None:
    """Share the view's first (checked) calls, two lookups each, so the next ones are not."""
    for _ in range(CHECKED_CALLS):
        _concurrently(step, [_lookup(1, x=1.5), _lookup(2, x=2.5)], runner)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def runner(recorder: Recorder) -> Iterator[UdfRunner]:
    udfs = UdfRunner(2, metrics=recorder)
    yield udfs
    udfs.close()


@pytest.mark.parametrize("view", [rw_scored, rw_python], ids=["pandas", "python"])
def test_concurrent_lookups_share_a_call_and_each_gets_its_own_answer(
    view: OnDemandFeatureView, runner: UdfRunner, recorder: Recorder
) -> None:
    step = _build(view)
    _past_the_checks(step, runner)
    assert recorder.calls == [(view.name, 2)] * CHECKED_CALLS
    assert not recorder.mismatches
    lookups = [_lookup(i) for i in range(24)]
    answers = _concurrently(step, lookups, runner)
    for (entities, result), answer in zip(lookups, answers, strict=True):
        assert answer == _alone(step, entities, result)
    # Requests whose x values are ints (every third) see an int64 column, as alone: they are
    # not put in one call with the float ones, whose call holds all of theirs.
    assert sorted(recorder.calls[CHECKED_CALLS:]) == [(view.name, 8), (view.name, 16)]
    expected = {"int64", "float64"} if view is rw_scored else {"int", "float"}
    assert {a["x_dtype"][0] for a in answers} == expected


def test_a_view_without_the_tag_is_called_once_per_lookup(runner: UdfRunner) -> None:
    CALLS.clear()
    answers = _concurrently(_build(plain_scored), [_lookup(i) for i in range(12)], runner)
    assert all(isinstance(a, dict) for a in answers)
    assert [rows for rows, _ in CALLS] == [1] * 12


def test_a_view_that_breaks_the_promise_answers_alone_and_stops_sharing(
    runner: UdfRunner, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """The first shared calls are checked against one lookup at a time: a view whose
    answer depends on the other rows gets each request's own answer, and is shared no more."""
    step = _build(rw_counting)
    with caplog.at_level(logging.WARNING, logger="service.udf_batches"):
        first = _concurrently(step, [_lookup(i, x=1.5) for i in range(6)], runner)
    assert first == [{"n": [1]}] * 6
    assert recorder.mismatches == ["rw_counting"]
    assert "'rw_counting' is tagged row-wise" in caplog.text
    later = _concurrently(step, [_lookup(i, x=1.5) for i in range(6)], runner)
    assert later == [{"n": [1]}] * 6
    assert recorder.calls == [("rw_counting", 6)] + [("rw_counting", 1)] * 6  # later: alone


def test_an_output_whose_dtype_follows_its_neighbours_is_caught(
    runner: UdfRunner, recorder: Recorder
) -> None:
    """``.map`` with a missing key: alone, driver 0's id is exact; beside an unknown key
    the column is float64 and the id would lose its last digits."""
    step = _build(rw_mapped)
    lookups = [_lookup(0, x=1.5), _lookup(1, x=1.5), _lookup(5, x=1.5)]
    answers = _concurrently(step, lookups, runner)
    assert answers[0] == {"big": [2**60 + 1]}
    assert answers == [_alone(step, *lookup) for lookup in lookups]
    assert recorder.mismatches == ["rw_mapped"]


def test_each_request_s_outputs_are_converted_as_they_would_be_alone() -> None:
    """Feast checks a python output's type by its first value: a bool among floats passes
    in a column led by a float, and is refused in its own request's column."""
    step = _build(rw_flagged)
    tables = [(_lookup(1, x=1.5)[0] | {"a": [1.0], "b": [1], "tag": ["t"]}, 1) for _ in range(2)]
    tables[1][0]["x"] = [3.0]
    outcomes = run_shared(step, tables, full_feature_names=False)
    assert outcomes[0] == {"z": [1.5]}
    assert isinstance(outcomes[1], InvalidRequestError)
    assert "declared DOUBLE" in str(outcomes[1])


def test_rows_handed_back_in_another_order_fail_the_shared_call() -> None:
    step = _build(rw_sorted)
    lookups = [_lookup(i, x=1.5) for i in (5, 1)]
    tables = [
        ({"rider_id": e["rider_id"], "x": e["x"]} | {k.replace("stats:", "stats__"): c.values
         for k, c in r.columns.items()}, 1)
        for e, r in lookups
    ]  # fmt: skip
    with pytest.raises(InvalidRequestError, match="another order"):
        run_shared(step, tables, full_feature_names=False)


def test_a_lookup_the_transformation_refuses_fails_alone_and_off_the_loop(
    runner: UdfRunner, recorder: Recorder
) -> None:
    """One request's data makes the UDF raise: the shared call (on the loop, where the view
    has earned its place) is made again for each request alone, in the threads, so that
    request gets its 4xx, the others their answers, and the loop is not held N times."""
    step = _build(rw_scored)
    _past_the_checks(step, runner)
    pace = runner.pace(step)
    for _ in range(PROOF_CALLS):
        pace.record(0.0, ODFV_THREAD_ROWS - 1, ran_on_loop=False)
    lookups = [_lookup(i, x=-1.0 if i == 4 else 1.5) for i in range(8)]
    CALLS.clear()
    answers = _concurrently(step, lookups, runner)
    calls = list(CALLS)
    assert calls[0] == (8, threading.main_thread().name)  # the shared call, on the loop
    assert [rows for rows, _ in calls[1:]] == [1] * 8
    assert all(name.startswith("odfv") for _, name in calls[1:])
    assert isinstance(answers[4], InvalidRequestError)
    assert "x must not be negative" in str(answers[4])
    for i, ((entities, result), answer) in enumerate(zip(lookups, answers, strict=True)):
        if i != 4:
            assert answer == _alone(step, entities, result)


def test_a_refused_lookup_in_a_checked_call_fails_alone(
    runner: UdfRunner, recorder: Recorder
) -> None:
    """The view's first shared calls are checked; one that fails as a whole answers each
    request as alone too, and a bad request's refusal is no broken promise."""
    step = _build(rw_scored)
    lookups = [_lookup(i, x=-1.0 if i == 1 else 1.5) for i in range(3)]
    answers = _concurrently(step, lookups, runner)
    assert isinstance(answers[1], InvalidRequestError)
    assert [answers[0], answers[2]] == [_alone(step, *lookups[0]), _alone(step, *lookups[2])]
    assert recorder.calls == [("rw_scored", 3)]
    assert not recorder.mismatches


def test_a_view_whose_shared_calls_keep_failing_stops_sharing(
    runner: UdfRunner, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows handed back in another order fail every shared call while each lookup alone is
    answered: after FAILED_CALLS such calls in a row the view's lookups run alone."""
    step = _build(rw_sorted)
    lookups = [_lookup(5, x=1.5), _lookup(1, x=1.5)]  # sorted by y: the other way round
    with caplog.at_level(logging.WARNING, logger="service.udf_batches"):
        for _ in range(FAILED_CALLS):
            assert not recorder.mismatches
            assert _concurrently(step, lookups, runner) == [_alone(step, *x) for x in lookups]
    assert recorder.mismatches == ["rw_sorted"]
    assert f"{FAILED_CALLS} shared calls in a row failed where each lookup" in caplog.text
    assert _concurrently(step, lookups, runner) == [_alone(step, *x) for x in lookups]
    assert recorder.calls == [("rw_sorted", 2)] * FAILED_CALLS + [("rw_sorted", 1)] * 2


def test_a_view_failing_shared_calls_now_and_then_keeps_sharing(
    runner: UdfRunner, recorder: Recorder
) -> None:
    """Only failures in a row end sharing: a checked call that works resets the count."""
    step = _build(rw_sorted)
    reordered = [_lookup(5, x=1.5), _lookup(1, x=1.5)]  # sorted by y: the other way round
    in_order = [_lookup(1, x=1.5), _lookup(5, x=1.5)]
    for _ in range(FAILED_CALLS):
        for lookups in (reordered, in_order):
            assert _concurrently(step, lookups, runner) == [_alone(step, *x) for x in lookups]
    assert not recorder.mismatches
    assert recorder.calls == [("rw_sorted", 2)] * (2 * FAILED_CALLS)


def test_a_client_sending_refused_data_cannot_end_sharing_or_touch_other_answers(
    runner: UdfRunner, recorder: Recorder
) -> None:
    """A hostile caller's bad request in every shared call, checked or not: each other
    caller still gets its own answer, and the view keeps sharing."""
    step = _build(rw_scored)
    for round_ in range(CHECKED_CALLS + 2 * FAILED_CALLS):
        lookups = [_lookup(round_ + i, x=-1.0 if i == 0 else 1.5) for i in range(3)]
        answers = _concurrently(step, lookups, runner)
        assert isinstance(answers[0], InvalidRequestError)
        assert answers[1:] == [_alone(step, *lookup) for lookup in lookups[1:]]
    assert not recorder.mismatches
    assert recorder.calls == [("rw_scored", 3)] * (CHECKED_CALLS + 2 * FAILED_CALLS)


def test_quick_refusals_do_not_earn_a_lone_lookup_the_loop(runner: UdfRunner) -> None:
    """A lone lookup of a tagged view is paced as an untagged one: refusals prove nothing."""
    step = _build(rw_scored)
    for _ in range(2 * PROOF_CALLS):
        [answer] = _concurrently(step, [_lookup(1, x=-1.0)], runner)
        assert isinstance(answer, InvalidRequestError)
    assert not runner.pace(step).allows(1)


def test_python_tables_holding_lists_are_not_shared() -> None:
    """A python UDF may change a list it is handed; the calls that read it must not share it."""
    step = _build(rw_python)
    plain = {"rider_id": [1], "x": [1.5], "stats__a": [0.5], "stats__b": [3], "stats__tag": ["t"]}
    assert batch_key(step, plain, full_feature_names=False) is not None
    for value in ([["a", "b"]], [{"k": 1}], [np.array([1.0])]):
        assert batch_key(step, plain | {"stats__tag": value}, full_feature_names=False) is None


def test_a_pandas_lookup_with_nulls_in_its_table_is_not_batched(
    runner: UdfRunner, recorder: Recorder
) -> None:
    """A null makes Arrow, not NumPy, read the column: its dtype could differ in a batch."""
    step = _build(rw_scored)
    _past_the_checks(step, runner)
    lookups = [_lookup(i, x=2.5) for i in range(6)]
    nulled = lookups[2][1]
    nulled.columns["stats:a"] = FeatureColumn([None], ["NOT_FOUND"], [None])
    answers = _concurrently(step, lookups, runner)
    assert sorted(recorder.calls[CHECKED_CALLS:]) == [("rw_scored", 1), ("rw_scored", 5)]
    assert answers[2] == _alone(step, lookups[2][0], nulled)
    assert answers[2]["y"] == [-2.5 + 20]  # the null read as NaN, filled with -1


def test_a_shared_call_holds_fewer_rows_than_a_thread_call(
    runner: UdfRunner, recorder: Recorder
) -> None:
    step = _build(rw_scored)
    _past_the_checks(step, runner)
    lookups = [_lookup(i, rows=20, x=1.5) for i in range(7)]
    answers = _concurrently(step, lookups, runner)
    assert recorder.calls[CHECKED_CALLS:] == [("rw_scored", 3), ("rw_scored", 3), ("rw_scored", 1)]
    assert ODFV_THREAD_ROWS > 60
    for (entities, result), answer in zip(lookups, answers, strict=True):
        assert answer == _alone(step, entities, result)


TYPED = [Field(name="y", dtype=Float64), Field(name="k", dtype=Int64),
         Field(name="label", dtype=String), Field(name="big", dtype=Bool),
         Field(name="half", dtype=Float32)]  # fmt: skip


@on_demand_feature_view(
    sources=[stats, trip],
    schema=TYPED,
    mode="pandas", tags=ROW_WISE,
)  # fmt: skip
def rw_typed(inputs: pd.DataFrame) -> pd.DataFrame:
    """Row-wise outputs of several types, some not of their schema's dtype."""
    out = pd.DataFrame(index=inputs.index)
    out["y"] = inputs["a"] * inputs["x"]
    out["k"] = inputs["stats__b"] * 2
    out["label"] = inputs["tag"] + ":" + inputs["x"].astype(str)
    out["big"] = inputs["x"] > 1
    out["half"] = inputs["x"] / 2
    return out


@on_demand_feature_view(
    sources=[stats, trip],
    schema=TYPED,
    mode="python", tags=ROW_WISE,
)  # fmt: skip
def rw_typed_python(inputs: dict[str, Any]) -> dict[str, Any]:
    """:func:`rw_typed` in python mode; a negative x is refused (a bool for a Float64)."""
    xs, rows = inputs["x"], zip(inputs["stats__a"], inputs["x"], strict=True)
    return {
        "y": [a * x if x >= 0 else True for a, x in rows],
        "k": [b * 2 for b in inputs["stats__b"]],
        "label": [f"{t}:{x}" for t, x in zip(inputs["stats__tag"], xs, strict=True)],
        "big": [x > 1 for x in xs],
        "half": [x / 2 for x in xs],
    }


_X = {
    "int": st.integers(-(2**40), 2**40),
    "float": st.floats(-1e6, 1e6),
}


@st.composite
def _tables(draw: st.DrawFn) -> list[Table]:
    """Tables of one shape (as one batch key would admit them): the same kinds per column,
    ints, floats, or both in every table."""
    kind = draw(st.sampled_from(["int", "float", "mixed"]))
    tables: list[Table] = []
    for _ in range(draw(st.integers(2, 5))):
        if kind == "mixed":
            xs = [draw(_X["int"]), draw(_X["float"])]
            xs += draw(st.lists(st.one_of(_X["int"], _X["float"]), max_size=2))
        else:
            xs = draw(st.lists(_X[kind], min_size=1, max_size=3))
        n = len(xs)
        a = draw(st.lists(st.floats(-1e3, 1e3), min_size=n, max_size=n))
        b = draw(st.lists(st.integers(-(2**40), 2**40), min_size=n, max_size=n))
        tag = draw(st.lists(st.text("ab", max_size=3), min_size=n, max_size=n))
        columns = {"rider_id": list(range(n)), "x": xs, "stats__a": a, "stats__b": b,
                   "stats__tag": tag}  # fmt: skip
        tables.append((columns, n))
    return tables


@pytest.mark.parametrize("view", [rw_typed, rw_typed_python], ids=["pandas", "python"])
@settings(max_examples=150, deadline=None)
@given(tables=_tables())
def test_shared_calls_of_a_row_wise_view_answer_each_table_as_alone(
    view: OnDemandFeatureView, tables: list[Table]
) -> None:
    step = _build(view)
    keys = {batch_key(step, columns, full_feature_names=False) for columns, _ in tables}
    assert len(keys) == 1  # tables a batch would hold together
    assert None not in keys
    alone = [run_alone(step, (dict(c), n), full_feature_names=False) for c, n in tables]
    shared = run_shared(step, tables, full_feature_names=False)
    assert [repr(o) for o in shared] == [repr(o) for o in alone]


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
    out["fare"] = 2.5 + inputs["km"] * inputs["rate"].astype("float64").fillna(1.0)
    out["band"] = (inputs["trips"].astype("float64").fillna(0) // 3).astype("int64").astype(str)
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
    """Rounds of eight lookups at once (one and two entity rows, known and unknown drivers,
    int and float request data), answered by ours concurrently and by ``feast serve`` one by
    one; enough rounds that shared calls past the checked first ones likely answer some."""
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
        for i in range(192)
    ]

    async def in_rounds() -> list[httpx.Response]:
        answers: list[httpx.Response] = []
        for start in range(0, len(bodies), 8):
            calls = [
                ours.client.post("/get-online-features", json=body)
                for body in bodies[start : start + 8]
            ]
            answers.extend(await asyncio.gather(*calls))
        return answers

    mine = ours.run(in_rounds())
    for body, answer in zip(bodies, mine, strict=True):
        theirs = feast.post("/get-online-features", json=body)
        assert answer.status_code == 200, answer.text
        assert theirs.status_code == 200, theirs.text
        got, expected = columns(answer.json()), columns(theirs.json())
        for name in ("fare", "band", "per_trip", "rate"):
            assert got[name]["values"] == expected[name]["values"], (name, body)
    # Each lookup is counted once, in the call that answered it (alone when its table held
    # a null: an unknown driver, or driver 2's); more calls than the checked ones were shared.
    metrics = ours.get("/metrics").text
    for view in ("rb_fare", "rb_per_trip"):
        assert (
            f'featurestore_odfv_shared_call_lookups_sum{{feature_view="{view}"}} 192.0' in metrics
        )
        count, alone = (
            float(line.rpartition(" ")[2])
            for prefix in (
                f'featurestore_odfv_shared_call_lookups_count{{feature_view="{view}"}}',
                f'featurestore_odfv_shared_call_lookups_bucket{{feature_view="{view}",le="1.0"}}',
            )
            for line in metrics.splitlines()
            if line.startswith(prefix)
        )
        assert count - alone >= 1  # some lookups shared a call (timing allowing, many)
    assert "featurestore_odfv_row_wise_mismatches_total{" not in metrics  # no sample
