"""Where on-demand transformations run: their own bounded threads, and the record that
earns a view the event loop (per worker and per transformation code, per row count)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pandas as pd
from feast import Field, OnDemandFeatureView
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64

from online_store.read_columns import FeatureColumn
from online_store.reader import ReadResult
from service.odfv import OdfvStep
from service.udf_runner import (
    INLINE_BUDGET_SECONDS,
    LOOP_WINDOW,
    MAX_HOLD_SECONDS,
    PROOF_CALLS,
    THREAD_SLACK,
    UdfPace,
    UdfRunner,
)
from tests.service.conftest import AppClient, Repo
from tests.service.test_odfv import _one_ride, _step, stats, trip

QUICK, SLOW = INLINE_BUDGET_SECONDS / 4, INLINE_BUDGET_SECONDS * 10


def test_slow_transformations_fill_their_own_threads_not_the_ones_ready_needs(
    app_factory: Any, repo: Repo
) -> None:
    """Six on-demand lookups through a 1 s UDF, two threads for them: /ready (whose
    registry check runs in the default thread pool) still answers at once, and no more
    than two transformations run at a time."""
    client: AppClient = app_factory(odfv_threads=2)
    ride = _one_ride(repo)
    view = client.state.catalog.snapshot.on_demand_views["fare_estimate"]
    original = view.feature_transformation.udf
    running: set[int] = set()
    most = [0]
    lock = threading.Lock()

    def slow(frame: pd.DataFrame) -> pd.DataFrame:
        with lock:
            running.add(threading.get_ident())
            most[0] = max(most[0], len(running))
        time.sleep(1.0)  # injected latency: a transformation that calls a model, say
        with lock:
            running.discard(threading.get_ident())
        return original(frame)

    async def scenario() -> tuple[float, list[int], int]:
        lookups = [
            asyncio.ensure_future(client.client.post("/get-online-features", json=ride))
            for _ in range(6)
        ]
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        ready = await client.client.get("/ready")
        waited = time.perf_counter() - started
        answers = await asyncio.gather(*lookups)
        return waited, [a.status_code for a in answers], ready.status_code

    view.feature_transformation.udf = slow
    try:
        waited, statuses, ready_status = client.run(scenario())
    finally:
        view.feature_transformation.udf = original
    assert statuses == [200] * 6
    assert ready_status == 200
    assert waited < 0.5, f"/ready waited {waited:.2f}s behind the transformations"
    assert most[0] == 2


def test_a_quick_record_holds_for_the_row_counts_it_was_earned_on() -> None:
    pace = UdfPace()
    for _ in range(PROOF_CALLS):
        assert not pace.allows(1)
        pace.record(QUICK, 1, ran_on_loop=False)
    assert pace.allows(1)
    # Quick on one row says nothing about 40 rows: those go to a thread until proven.
    assert not pace.allows(40)
    pace.record(QUICK, 40, ran_on_loop=False)
    assert pace.allows(40)
    assert pace.allows(7)
    # One slow call on the loop: back to threads, and twice the proof, for every size.
    pace.record(SLOW, 1, ran_on_loop=True)
    assert not pace.allows(1)
    for _ in range(2 * PROOF_CALLS - 1):
        pace.record(QUICK, 1, ran_on_loop=False)
        assert not pace.allows(1)
    pace.record(QUICK, 1, ran_on_loop=False)
    assert pace.allows(1)
    assert not pace.allows(40)


def test_a_slow_call_in_a_thread_takes_back_the_proof_without_doubling_it() -> None:
    pace = UdfPace()
    pace.record(QUICK, 1, ran_on_loop=False)
    pace.record(SLOW, 1, ran_on_loop=False)  # takes back SLOW_PENALTY quick calls (the one)
    for _ in range(PROOF_CALLS - 1):
        pace.record(QUICK, 1, ran_on_loop=False)
    assert not pace.allows(1)
    pace.record(QUICK, 1, ran_on_loop=False)
    assert pace.allows(1)


def test_a_slow_call_in_a_thread_at_a_size_the_loop_takes_leaves_the_loop() -> None:
    """A call sent to a thread just before the view earned the loop, and slower there than
    a call may hold the loop, is as telling as one on the loop (without having held it: the
    proof is not doubled)."""
    pace = UdfPace()
    for _ in range(PROOF_CALLS):
        pace.record(QUICK, 1, ran_on_loop=False)
    assert pace.allows(1)
    pace.record(SLOW, 1, ran_on_loop=False)
    assert not pace.allows(1)
    for _ in range(PROOF_CALLS):
        pace.record(QUICK, 1, ran_on_loop=False)
    assert pace.allows(1)


def test_slow_larger_requests_in_threads_leave_one_row_lookups_on_the_loop() -> None:
    """Mixed sizes: the 30-row requests are slow (in threads, as the loop does not allow
    them); the one-row lookups between them keep the loop, with the proof not doubled."""
    pace = UdfPace()
    for _ in range(PROOF_CALLS):
        pace.record(QUICK, 1, ran_on_loop=False)
    for _ in range(10):
        assert not pace.allows(30)
        pace.record(SLOW, 30, ran_on_loop=False)
        assert pace.allows(1)
        pace.record(QUICK, 1, ran_on_loop=True)
    # A slow one-row call on the loop still sends it back, needing twice the proof.
    pace.record(SLOW, 1, ran_on_loop=True)
    for _ in range(2 * PROOF_CALLS - 1):
        pace.record(QUICK, 1, ran_on_loop=False)
    assert not pace.allows(1)


OVER = INLINE_BUDGET_SECONDS * 1.5  # over the budget, under the hold limit


def _earned(needed: int = PROOF_CALLS) -> UdfPace:
    pace = UdfPace()
    pace.needed = needed
    for _ in range(needed):
        pace.record(QUICK, 1, ran_on_loop=False)
    assert pace.allows(1)
    return pace


def _calls_to_earn(pace: UdfPace, cost: float = QUICK, most: int = 10_000) -> int:
    for calls in range(1, most + 1):
        pace.record(cost, 1, ran_on_loop=False)
        if pace.allows(1):
            return calls
    return most + 1


def test_calls_now_and_then_over_budget_on_the_loop_keep_it() -> None:
    """A garbage collection or the OS running something else now and then puts a quick
    view's call over the budget: the view stays on the loop (it used to leave on one)."""
    pace = _earned()
    for _ in range(20):
        pace.record(OVER, 1, ran_on_loop=True)
        assert pace.allows(1)
        for _ in range(LOOP_WINDOW // 2):
            pace.record(QUICK, 1, ran_on_loop=True)
    pace.record(MAX_HOLD_SECONDS * 0.9, 1, ran_on_loop=True)
    assert pace.allows(1)


def test_a_view_over_budget_in_half_its_loop_calls_goes_back_with_the_proof_doubled() -> None:
    pace = _earned()
    for _ in range(LOOP_WINDOW // 2):
        assert pace.allows(1)
        pace.record(QUICK, 1, ran_on_loop=True)
        pace.record(OVER, 1, ran_on_loop=True)
    assert not pace.allows(1), "over budget in 4 of its last 8 calls, it kept the loop"
    assert _calls_to_earn(pace) == 2 * PROOF_CALLS


def test_one_call_past_the_hold_limit_on_the_loop_sends_the_view_back_at_once() -> None:
    pace = _earned()
    pace.record(MAX_HOLD_SECONDS * 1.1, 1, ran_on_loop=True)
    assert not pace.allows(1)
    assert _calls_to_earn(pace) == 2 * PROOF_CALLS


def test_calls_in_threads_count_as_quick_up_to_the_slack() -> None:
    """The same call costs more in a thread (its GIL handoffs are charged to it): up to
    THREAD_SLACK budgets there earns the loop, where the view's own costs then decide."""
    assert _calls_to_earn(UdfPace(), INLINE_BUDGET_SECONDS * THREAD_SLACK * 0.9) == PROOF_CALLS
    assert _calls_to_earn(UdfPace(), INLINE_BUDGET_SECONDS * THREAD_SLACK * 1.1, 500) > 500


def test_a_few_slow_calls_in_threads_do_not_keep_a_quick_view_off_the_loop_for_good() -> None:
    """After many falls back the proof is long (here 256 calls): one slow call in ten
    (a busy moment) delays the loop, it does not bar it; one in four does."""
    pace = UdfPace()
    pace.needed = 256
    for calls in range(1, 2000):
        pace.record(SLOW if calls % 10 == 0 else QUICK, 1, ran_on_loop=False)
        if pace.allows(1):
            break
    assert pace.allows(1)
    assert calls < 2 * 256
    pace = UdfPace()
    pace.needed = 256
    for calls in range(1, 2000):
        pace.record(SLOW if calls % 4 == 0 else QUICK, 1, ran_on_loop=False)
        assert not pace.allows(1)


def test_a_stay_on_the_loop_as_long_as_the_proof_halves_the_next_proof() -> None:
    pace = _earned(needed=4 * PROOF_CALLS)
    for _ in range(4 * PROOF_CALLS):
        pace.record(QUICK, 1, ran_on_loop=True)
    pace.record(SLOW, 1, ran_on_loop=True)  # back, with the halved proof doubled again
    assert not pace.allows(1)
    assert _calls_to_earn(pace) == 4 * PROOF_CALLS
    pace.record(SLOW, 1, ran_on_loop=True)  # at once, no stay: doubled
    assert _calls_to_earn(pace) == 8 * PROOF_CALLS


def test_a_view_on_the_loop_leaves_for_a_thread_call_only_past_the_hold_limit() -> None:
    """Calls sent to threads while the view was earning the loop come back later; they
    cost more there, and only one that would have held the loop too long counts."""
    pace = _earned()
    pace.record(INLINE_BUDGET_SECONDS * THREAD_SLACK * 1.5, 1, ran_on_loop=False)
    assert pace.allows(1)
    pace.record(MAX_HOLD_SECONDS * 1.5, 1, ran_on_loop=False)
    assert not pace.allows(1)
    assert _calls_to_earn(pace) == PROOF_CALLS  # it held no loop: the proof is not doubled


@on_demand_feature_view(
    sources=[stats, trip], schema=[Field(name="y", dtype=Float64)], mode="pandas"
)
def scored(inputs: pd.DataFrame) -> pd.DataFrame:  # same name as test_odfv's, other code
    out = pd.DataFrame()
    out["y"] = inputs["x"] * 2
    return out


def test_the_record_outlives_a_registry_refresh_but_not_a_code_change() -> None:
    """A refresh rebuilds every view from the registry (new objects, new plans); a view
    whose code is unchanged keeps its place on the loop, one with new code starts again."""
    runner = UdfRunner(1)
    try:
        step = _step(full_feature_names=False)
        for _ in range(PROOF_CALLS):
            runner.pace(step).record(QUICK, 1, ran_on_loop=False)
        assert runner.pace(step).allows(1)
        refreshed = OnDemandFeatureView.from_proto(step.view.to_proto())
        assert refreshed is not step.view
        assert runner.pace(_step(False, view=refreshed)).allows(1)
        assert not runner.pace(_step(False, view=scored)).allows(1)
    finally:
        runner.close()


def _calls_on_a_busy_server(
    runner: UdfRunner, step: OdfvStep, *, calls: int, hold: int
) -> list[float]:
    """Wall times of one-row calls of ``step`` (until it earns the loop, at most ``calls``)
    while another thread runs Python all the time, as the event loop does under load,
    holding the GIL for ``sum(range(hold))`` at a time (C code, which the interpreter's
    switch interval does not cut short)."""
    result = ReadResult(
        {
            f"stats:{name}": FeatureColumn([value], ["PRESENT"], [None])
            for name, value in (("a", 1.0), ("b", 3), ("tag", "x"))
        }
    )
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            sum(range(hold))

    async def timed() -> list[float]:
        walls = []
        for _ in range(calls):
            started = time.perf_counter()
            await runner.transform(
                step, {"rider_id": [1], "x": [2.0]}, result, rows=1, full_feature_names=False
            )
            walls.append(time.perf_counter() - started)
            if runner.pace(step).allows(1):
                break
        return walls

    spinner = threading.Thread(target=busy)
    spinner.start()
    try:
        return asyncio.run(timed())
    finally:
        stop.set()
        spinner.join()


@on_demand_feature_view(
    sources=[stats, trip], schema=[Field(name="y", dtype=Float64)], mode="python"
)
def handing_round(inputs: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0)  # lets go of the GIL for a moment, as NumPy and I/O calls do
    return {"y": [v * 2 for v in inputs["x"]]}


def test_a_quick_view_earns_the_loop_while_other_threads_hold_the_gil() -> None:
    """A quick view's call in a thread that lets go of the GIL once waits for it while the
    loop's thread holds it (here about 50 ms): many times its CPU time, and not the view's
    cost. Its record must still earn it the loop."""
    runner = UdfRunner(1)
    step = OdfvStep.build(handing_round, _step(False).inputs, (("y", "out_y"),))
    try:
        walls = _calls_on_a_busy_server(runner, step, calls=6 * PROOF_CALLS, hold=3_000_000)
        assert runner.pace(step).allows(1), (
            f"the view never earned the loop; calls took {[round(w * 1e3, 1) for w in walls]} ms"
        )
    finally:
        runner.close()
    assert len(walls) >= PROOF_CALLS
    # The waits were real: calls took far longer than a call may hold the loop (on a
    # loaded machine the OS may leave the other thread waiting now and then, and a call
    # then has the GIL to itself).
    assert max(walls) > 10 * INLINE_BUDGET_SECONDS


@on_demand_feature_view(
    sources=[stats, trip], schema=[Field(name="y", dtype=Float64)], mode="pandas"
)
def model_call(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    time.sleep(0.05)  # a model server's answer: the thread sleeps, the CPU is free
    out["y"] = inputs["x"] * 2
    return out


def test_a_view_waiting_on_a_model_server_does_not_earn_the_loop_on_a_busy_server() -> None:
    """Its CPU time is small, and the loop keeps the process busy while it waits, but the
    wait is the view's own: on the loop it would hold every other lookup for 50 ms."""
    runner = UdfRunner(1)
    step = OdfvStep.build(model_call, _step(False).inputs, (("y", "out_y"),))
    try:
        walls = _calls_on_a_busy_server(runner, step, calls=6 * PROOF_CALLS, hold=100)
        assert not runner.pace(step).allows(1)
    finally:
        runner.close()
    assert len(walls) == 6 * PROOF_CALLS
