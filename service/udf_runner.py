"""Where on-demand transformations run: threads of their own, or the event loop.

A view's transformation is the user's code and may take any time (a model call, say),
so it runs in one of the worker's transformation threads (``FEATURESTORE_ODFV_THREADS``),
kept apart from the default thread pool that API-key checks, registry reloads and
``/ready`` use: however many slow transformations are waiting, those are not queued
behind them. The event loop serves other lookups meanwhile.

A view earns the event loop (no thread hop, which costs the one-row lookup about 6% of
its throughput and half again its p99) by its record: once its last few successful calls
(:data:`PROOF_CALLS`) in a thread each cost at most :data:`THREAD_SLACK` times
:data:`INLINE_BUDGET_SECONDS` (see :class:`_Clock`; the same call costs more in a thread,
whose GIL handoffs and cold caches are charged to it: 1.5 times the CPU of the
benchmark's pandas view on the loop), it runs on the loop for requests of up to as many
entity rows as those calls had. There its own costs decide: one call over
:data:`MAX_HOLD_SECONDS` sends it back to a thread at once, and so do calls over the
budget in half of its last :data:`LOOP_WINDOW` calls on the loop (a call now and then
over the budget, from the garbage collector or the OS running something else, does not).
Back in a thread it must prove itself over twice as many calls (each slow call there
takes back :data:`SLOW_PENALTY` quick ones), and a stay on the loop as long as its
proof halves the next one. While the view is on the loop, a call of a
proven size still in a thread sends it back only past :data:`MAX_HOLD_SECONDS`, and a
slow one of a larger request leaves the loop to the sizes already proven. A request
larger than any the view has proven itself on goes to a thread (and, when quick, widens
the proof); requests of :data:`ODFV_THREAD_ROWS` rows or more always do.

The record is kept per worker and per transformation (view name, mode and UDF source), so
it survives registry refreshes that leave the view's code as it was, and starts again
when the code changes.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import resource
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from online_store.reader import ReadResult
from service.odfv import OdfvStep, run_odfv, transform_columns, udf_columns
from service.udf_batches import Batcher, BatchMetrics, batch_key
from service.udf_records import CodeRecords

_T = TypeVar("_T")

# From this many entity rows on, a view always runs in a transformation thread.
ODFV_THREAD_ROWS = 64
# What a call on the event loop may usually hold it for.
INLINE_BUDGET_SECONDS = 0.002
# No call may hold the loop longer: one that does sends its view back to a thread.
MAX_HOLD_SECONDS = 4 * INLINE_BUDGET_SECONDS
# A call in a thread counts towards the proof up to this many budgets.
THREAD_SLACK = 2.0
# On the loop, a view whose calls were over budget in half of its last this many calls
# goes back to a thread.
LOOP_WINDOW = 8
# Quick calls in threads before a view runs on the loop (each slow one takes back
# SLOW_PENALTY of them); doubled on each fall back from the loop, halved by a stay there as
# long as the proof.
PROOF_CALLS = 4
SLOW_PENALTY = 4
MAX_PROOF_CALLS = 4096


class UdfPace:
    """One transformation's record (see the module notes).

    Updated from the loop and from transformation threads, where a lost update only
    delays a switch by a call.
    """

    __slots__ = ("fast_calls", "loop_calls", "needed", "on_loop", "over", "proven_rows", "recent")

    def __init__(self) -> None:
        self.on_loop = False
        self.fast_calls = 0  # quick calls in threads, less SLOW_PENALTY per slow one
        self.needed = PROOF_CALLS
        self.proven_rows = 0  # the most entity rows of a call in the current proof
        self.loop_calls = 0  # calls on the loop since it was earned
        # Whether each of the last LOOP_WINDOW calls on the loop was over budget.
        self.recent: deque[bool] = deque(maxlen=LOOP_WINDOW)
        self.over = 0  # how many of ``recent`` were

    def allows(self, rows: int) -> bool:
        """Whether a request of ``rows`` entity rows may run on the event loop."""
        return self.on_loop and rows <= self.proven_rows

    def record(self, seconds: float, rows: int, *, ran_on_loop: bool) -> None:
        """Account one call of ``rows`` entity rows that took ``seconds`` (see :class:`_Clock`)."""
        if ran_on_loop:
            if seconds <= MAX_HOLD_SECONDS and self._keeps_loop(seconds > INLINE_BUDGET_SECONDS):
                return
            # Held the loop too long: prove it again, over more calls.
            self._leave_loop(min(self.needed * 2, MAX_PROOF_CALLS))
        elif self.on_loop:
            # Only a call that would have held the loop too long tells against a view the
            # loop takes (a thread's GIL waits make most calls there cost more), and only
            # at the sizes the loop takes; it held no loop, so the proof is not doubled.
            if seconds > MAX_HOLD_SECONDS and rows <= self.proven_rows:
                self._leave_loop(self.needed)
            elif seconds <= THREAD_SLACK * INLINE_BUDGET_SECONDS:
                self.proven_rows = max(self.proven_rows, rows)  # a larger size, proven
        elif seconds <= THREAD_SLACK * INLINE_BUDGET_SECONDS:
            self.fast_calls += 1
            self.proven_rows = max(self.proven_rows, rows)
            if self.fast_calls >= self.needed:
                self.on_loop = True
                self.loop_calls = 0
                self.recent.clear()
                self.over = 0
        else:
            self.fast_calls = max(0, self.fast_calls - SLOW_PENALTY)
            if self.fast_calls == 0:
                self.proven_rows = 0

    def _keeps_loop(self, over_budget: bool) -> bool:
        """Add a call on the loop to the window; whether the view may stay there."""
        if len(self.recent) == LOOP_WINDOW:
            self.over -= self.recent[0]
        self.recent.append(over_budget)
        self.over += over_budget
        if self.over >= LOOP_WINDOW // 2:
            return False
        self.loop_calls += 1
        if self.loop_calls >= self.needed and self.needed > PROOF_CALLS:
            # As long on the loop as it had to prove itself in threads: the next fall
            # back needs half the proof this one did.
            self.needed //= 2
            self.loop_calls = 0
        return True

    def _leave_loop(self, needed: int) -> None:
        self.on_loop = False
        self.needed = needed
        self.fast_calls = 0
        self.proven_rows = 0


class UdfRunner:
    """Runs on-demand transformations for one worker (see the module notes)."""

    def __init__(self, threads: int, *, metrics: BatchMetrics | None = None) -> None:
        """``metrics`` counts the calls of row-wise views (see :mod:`service.udf_batches`)."""
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="odfv")
        self._paces = CodeRecords(UdfPace)
        # Shared calls stay under the size that always goes to a thread.
        self._batches = Batcher(
            self._run, max_rows=ODFV_THREAD_ROWS - 1, max_calls=threads, metrics=metrics
        )

    def pace(self, step: OdfvStep) -> UdfPace:
        """The record of ``step``'s transformation, new if its code was never run here."""
        return self._paces.get(step)

    async def transform(
        self,
        step: OdfvStep,
        entities: Mapping[str, Sequence[Any]],
        result: ReadResult,
        *,
        rows: int,
        full_feature_names: bool,
    ) -> dict[str, list[Any]]:
        """:func:`run_odfv` on the event loop or in a transformation thread; a row-wise
        view's lookups may share a call (:mod:`service.udf_batches`)."""
        ffn = full_feature_names
        call: Callable[[], dict[str, list[Any]]] = functools.partial(
            run_odfv, step, entities, result, full_feature_names=ffn
        )
        if step.row_wise and rows < ODFV_THREAD_ROWS:
            if self._batches.shares(step):
                columns = udf_columns(step, entities, result, full_feature_names=ffn)
                key = batch_key(step, columns, full_feature_names=ffn)
                if key is not None:
                    return await self._batches.transform(
                        step, key, columns, rows, full_feature_names=ffn
                    )
                call = functools.partial(
                    transform_columns, step, columns, rows, full_feature_names=ffn
                )
            self._batches.observe_alone(step)
        return await self._run(step, rows, call)

    async def _run(
        self, step: OdfvStep, rows: int, call: Callable[[], _T], *, thread: bool = False
    ) -> _T:
        """``call`` (``step``'s transformation of ``rows`` entity rows) where its record says,
        or (``thread``) in a thread, unrecorded."""
        if thread or rows >= ODFV_THREAD_ROWS:
            return await self._in_thread(call)
        pace = self.pace(step)
        if pace.allows(rows):
            return _paced(pace, rows, call, ran_on_loop=True)
        return await self._in_thread(functools.partial(_paced, pace, rows, call, ran_on_loop=False))

    async def _in_thread(self, call: Callable[[], _T]) -> _T:
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, context.run, call)

    def close(self) -> None:
        """Stop the threads once the calls already handed to them finish (queued ones
        still run, so a request in flight at shutdown gets its answer, not a 500)."""
        self._executor.shutdown(wait=False)


def _paced(pace: UdfPace, rows: int, call: Callable[[], _T], *, ran_on_loop: bool) -> _T:
    """Run ``call`` (a transformation of ``rows`` entity rows), recording what it cost."""
    clock = _Clock(ran_on_loop)
    try:
        answer = call()
    except Exception:
        # A refused request (bad request data) proves nothing about the UDF's speed; only a
        # slow failure counts, against it.
        if (cost := clock.cost()) > INLINE_BUDGET_SECONDS:
            pace.record(cost, rows, ran_on_loop=ran_on_loop)
        raise
    pace.record(clock.cost(), rows, ran_on_loop=ran_on_loop)
    return answer


# Voluntary context switches of the calling thread, where the OS counts them (Linux).
_THREAD_USAGE = getattr(resource, "RUSAGE_THREAD", None)


def _sleeps() -> int:
    return resource.getrusage(_THREAD_USAGE).ru_nvcsw if _THREAD_USAGE is not None else 0


class _Clock:
    """What a call would hold the event loop for (started on creation).

    On the loop, its wall time. In a thread, the wall time also counts the waits for the
    GIL while the loop (or any other thread) runs Python, which are not the view's cost: a
    busy server would never let a quick view prove itself. CPython waits for the GIL in
    timed waits of one switch interval each, so every time the thread went to sleep (a
    voluntary context switch) is allowed two intervals (one more for the OS to run it
    again); the time off the CPU beyond that allowance was spent waiting on something
    else (a model server, a file) and is charged, on top of the call's CPU time. Where
    the OS does not count a thread's sleeps, all of the wall time is charged.
    """

    __slots__ = ("cpu", "on_loop", "sleeps", "wall")

    def __init__(self, on_loop: bool) -> None:
        self.on_loop = on_loop
        self.sleeps = 0 if on_loop else _sleeps()
        self.wall, self.cpu = time.perf_counter(), time.thread_time()

    def cost(self) -> float:
        wall = time.perf_counter() - self.wall
        if self.on_loop:
            return wall
        cpu = time.thread_time() - self.cpu
        allowance = (_sleeps() - self.sleeps) * 2 * sys.getswitchinterval()
        return cpu + max(0.0, wall - cpu - allowance)
