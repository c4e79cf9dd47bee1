"""Where on-demand transformations run: their own bounded threads, and the record that
earns a view the event loop (per worker and per transformation code, per row count)."""

from __future__ import annotations

import asyncio
import sys
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
from service.udf_runner import INLINE_BUDGET_SECONDS, PROOF_CALLS, UdfPace, UdfRunner
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


def test_a_slow_call_in_a_thread_restarts_the_proof_without_doubling_it() -> None:
    pace = UdfPace()
    pace.record(QUICK, 1, ran_on_loop=False)
    pace.record(SLOW, 1, ran_on_loop=False)  # the run of quick calls starts again
    for _ in range(PROOF_CALLS - 1):
        pace.record(QUICK, 1, ran_on_loop=False)
    assert not pace.allows(1)
    pace.record(QUICK, 1, ran_on_loop=False)
    assert pace.allows(1)


def test_a_slow_call_in_a_thread_at_a_size_the_loop_takes_leaves_the_loop() -> None:
    """A call sent to a thread just before the view earned the loop, and slow there, is
    as telling as one on the loop (without having held it: the proof is not doubled)."""
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


def test_a_quick_view_earns_the_loop_while_other_threads_hold_the_gil() -> None:
    """A busy server: other threads run Python all the time, as the event loop does under
    load, and the interpreter hands the GIL round often. A quick view's calls in a thread
    then take many times their CPU time waiting for the GIL, which is not the view's cost:
    its record must still earn it the loop."""
    runner = UdfRunner(1)
    step = OdfvStep.build(scored, _step(False).inputs, (("y", "out_y"),))
    result = ReadResult(
        {
            f"stats:{name}": FeatureColumn([value], ["PRESENT"], [None])
            for name, value in (("a", 1.0), ("b", 3), ("tag", "x"))
        }
    )
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            sum(range(100))

    async def calls() -> list[float]:
        walls = []
        for _ in range(6 * PROOF_CALLS):
            started = time.perf_counter()
            await runner.transform(
                step, {"rider_id": [1], "x": [2.0]}, result, rows=1, full_feature_names=False
            )
            walls.append(time.perf_counter() - started)
            if runner.pace(step).allows(1):
                break
        return walls

    interval = sys.getswitchinterval()
    spinners = [threading.Thread(target=busy) for _ in range(6)]
    sys.setswitchinterval(0.0002)
    for spinner in spinners:
        spinner.start()
    try:
        walls = asyncio.run(calls())
    finally:
        stop.set()
        for spinner in spinners:
            spinner.join()
        sys.setswitchinterval(interval)
        runner.close()
    assert runner.pace(step).allows(1), (
        f"the view never earned the loop; calls took {[round(w * 1e3, 1) for w in walls]} ms"
    )
    assert len(walls) >= PROOF_CALLS
    # The waits were real: calls took longer than a call may hold the loop.
    assert max(walls) > INLINE_BUDGET_SECONDS
