"""Concurrent lookups of a row-wise on-demand view, answered by one call of its transformation.

A view whose owner tags it ``featurestore.row_wise: "true"`` (``service.odfv.ROW_WISE_TAG``)
promises that each output row, its value and its type, depends on its own input row
alone: the UDF gives a row the same answer whatever other rows share its frame, as
``inputs["a"] * inputs["b"]`` does and a ``groupby``, a rank, a mean over the frame or a
``.map`` whose missing keys turn a whole int column into floats do not. Its lookups may
then share a call: the requests whose reads finish in the same turn of the event loop,
or while the view's previous call runs, are handed to the transformation as one table
(up to the runner's ``max_rows`` entity rows), and each request gets its own rows of the
answer, each output converted on its own as it would be alone. Nothing waits for a batch
to fill: a lone request runs in the next turn of the loop.

Only requests whose tables the transformation would see alike share a call: the same
view of the same plan, the same full-feature-names flag, the same columns in the same
order, and in each column the same kinds of value, so the frame has the dtypes each
request's own frame would have. A column not of a plain NumPy kind (a null, a
timestamp, a list; see :mod:`service.odfv_frames`) keeps its request out of shared calls
of pandas-mode (and substrait) views, as Arrow's inference over it could come out
differently for the batch than for the request alone.

A shared call that fails as a whole (the UDF refuses one request's values, or hands the
rows back in another order) is made again for each request alone, in the transformation
threads, never on the loop. The promise itself is checked: the first
:data:`CHECKED_CALLS` shared calls of a view's code, and one in :data:`CHECK_EVERY` after
them, are made both ways at once in the threads (shared, and each request alone), and the
requests get the answers they get alone. A difference, or :data:`FAILED_CALLS` shared calls in a
row that failed where every lookup alone was answered, ends the sharing of that view's
lookups in this worker (logged, and counted in
``featurestore_odfv_row_wise_mismatches_total``).

Up to the runner's ``max_calls`` calls of one view run at a time (in threads; a call on
the loop holds it), so a view that waits on a model server keeps its threads busy; a
checked call adds one call per request, queued for the same threads.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import partial
from typing import Any, Protocol

from foundation.errors import InvalidRequestError
from service.odfv import Answer, OdfvStep, transform_columns, transform_shared
from service.odfv_frames import numpy_kinds
from service.udf_records import CodeRecords

log = logging.getLogger(__name__)

# Shared calls checked against one lookup at a time: the first ones of a view's code...
CHECKED_CALLS = 16
# ...then one in this many.
CHECK_EVERY = 256
# Shared calls in a row that fail where every lookup alone is answered, before a view's
# lookups are shared no more.
FAILED_CALLS = 8
_IMMUTABLE = frozenset({int, float, bool, str, bytes, type(None), datetime, date, Decimal})
Outcome = Answer | InvalidRequestError
Table = tuple[dict[str, list[Any]], int]  # (columns, entity rows)
# (view step's id, full feature names, ((column, kinds of value), ...))
BatchKey = tuple[int, bool, tuple[tuple[str, frozenset[type]], ...]]


class Dispatch(Protocol):
    """Runs one call of ``rows`` entity rows where the runner decides (or in a thread)."""

    def __call__(
        self, step: OdfvStep, rows: int, call: Callable[[], Any], *, thread: bool = False
    ) -> Awaitable[Any]: ...


class BatchMetrics(Protocol):
    """Where the shared calls are counted (:class:`service.metrics.Metrics`)."""

    def observe_shared_call(self, view: str, lookups: int) -> None: ...

    def note_row_wise_mismatch(self, view: str) -> None: ...


def batch_key(
    step: OdfvStep, columns: dict[str, list[Any]], *, full_feature_names: bool
) -> BatchKey | None:
    """What requests must share to share a call (see the module notes); None when this
    request's table may not be shared at all."""
    python = step.view.mode == "python"
    kinds: list[tuple[str, frozenset[type]]] = []
    for name, values in columns.items():
        kind = frozenset(map(type, values)) if python else numpy_kinds(values)
        # A list, dict or array in a python-mode column is shared between the calls that
        # read it, and the UDF may change it: only values no call can change are shared.
        if kind is None or (python and not kind <= _IMMUTABLE):
            return None
        kinds.append((name, kind))
    return id(step), full_feature_names, tuple(kinds)


def run_alone(step: OdfvStep, table: Table, *, full_feature_names: bool) -> Outcome:
    """One request's outcome from a call of its own: its answer or its refusal."""
    try:
        return transform_columns(step, *table, full_feature_names=full_feature_names)
    except InvalidRequestError as exc:
        return exc


def run_shared(
    step: OdfvStep, tables: Sequence[Table], *, full_feature_names: bool
) -> list[Outcome]:
    """Each request's outcome from one call over all the tables.

    Raises:
        InvalidRequestError: the call failed as a whole (see the module notes).
    """
    merged = {name: [v for columns, _ in tables for v in columns[name]] for name in tables[0][0]}
    sizes = [rows for _, rows in tables]
    return transform_shared(step, merged, sizes, full_feature_names=full_feature_names)


def try_shared(
    step: OdfvStep, tables: Sequence[Table], *, full_feature_names: bool
) -> list[Outcome] | None:
    """:func:`run_shared`, or None when the call failed as a whole."""
    try:
        return run_shared(step, tables, full_feature_names=full_feature_names)
    except InvalidRequestError:
        return None


def differences(shared: Sequence[Outcome], alone: Sequence[Outcome]) -> list[str]:
    """The response columns (or ``"refusal"``) where a shared call answered otherwise than
    each request's call of its own."""
    differ: set[str] = set()
    for together, apart in zip(shared, alone, strict=True):
        if isinstance(together, InvalidRequestError) or isinstance(apart, InvalidRequestError):
            if str(together) != str(apart):
                differ.add("refusal")
            continue
        # repr: 1 and 1.0, "1" and 1 differ; NaN equals NaN
        differ.update(k for k, v in apart.items() if repr(together.get(k)) != repr(v))
    return sorted(differ)


@dataclass(slots=True)
class _Record:
    """One transformation's shared calls in this worker."""

    shared_calls: int = 0
    failed_in_a_row: int = 0  # shared calls failed as a whole where every lookup alone did not
    off: bool = False  # its lookups are not shared any more (see :meth:`Batcher._stop`)

    def check_due(self) -> bool:
        return self.shared_calls <= CHECKED_CALLS or self.shared_calls % CHECK_EVERY == 0


@dataclass(slots=True)
class _Waiting:
    columns: dict[str, list[Any]]
    rows: int
    future: asyncio.Future[Answer]


@dataclass(slots=True)
class _Queue:
    key: BatchKey
    waiting: list[_Waiting] = field(default_factory=list)
    drains: set[asyncio.Task[None]] = field(default_factory=set)  # holds the live tasks
    starting: asyncio.Task[None] | None = None  # created, not yet taken its first batch


class Batcher:
    """The shared calls of one worker's row-wise views (see the module notes).

    Args:
        dispatch: runs one call where the runner decides, or in a thread.
        max_rows: the most entity rows one shared call is handed.
        max_calls: the most calls of one view (and batch key) running at a time.
        metrics: told of each call's lookups and of each broken promise.
    """

    def __init__(
        self,
        dispatch: Dispatch,
        *,
        max_rows: int,
        max_calls: int,
        metrics: BatchMetrics | None = None,
    ) -> None:
        self._dispatch = dispatch
        self._max_rows = max_rows
        self._max_calls = max_calls
        self._metrics = metrics
        self._queues: dict[BatchKey, _Queue] = {}
        self._records = CodeRecords(_Record, keep=lambda record: record.off)

    def shares(self, step: OdfvStep) -> bool:
        """Whether ``step``'s lookups may still share calls (its promise held so far)."""
        record = self._records.peek(step)
        return record is None or not record.off

    def observe_alone(self, step: OdfvStep) -> None:
        """Count a lookup of a row-wise view whose table could not be shared."""
        if self._metrics is not None:
            self._metrics.observe_shared_call(step.view.name, 1)

    async def transform(
        self,
        step: OdfvStep,
        key: BatchKey,
        columns: dict[str, list[Any]],
        rows: int,
        *,
        full_feature_names: bool,
    ) -> Answer:
        """This request's answer from the next call of the view that has room for it."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(key)
        waiting = _Waiting(columns, rows, loop.create_future())
        queue.waiting.append(waiting)
        starting = queue.starting
        if (starting is None or starting.done()) and len(queue.drains) < self._max_calls:
            # Starts in the next turn of the loop: the requests of this turn join it. Its
            # own context, not this request's: it serves many.
            task = loop.create_task(
                self._drain(step, queue, full_feature_names), context=contextvars.Context()
            )
            queue.starting = task
            queue.drains.add(task)
            task.add_done_callback(partial(self._drained, queue))
        return await waiting.future

    async def _drain(self, step: OdfvStep, queue: _Queue, full_feature_names: bool) -> None:
        """Make calls for the queue's requests until none wait."""
        me = asyncio.current_task()
        try:
            while queue.waiting:
                if queue.starting is me:
                    queue.starting = None  # later arrivals may start another call meanwhile
                batch = _take(queue.waiting, self._max_rows)
                if not batch:
                    continue
                try:
                    outcomes = await self._call(step, batch, full_feature_names)
                except asyncio.CancelledError:
                    for waiting in batch:
                        waiting.future.cancel()
                    raise
                except BaseException as exc:  # the worker's state (MemoryError...): each request's
                    _settle(batch, [_copy(exc) for _ in batch])
                    if not isinstance(exc, Exception):
                        raise  # SystemExit and the like: settled, and on their way
                    continue
                _settle(batch, outcomes)
        finally:
            # At once, in the same turn as the last look at the queue: no request can
            # arrive between the two and find no drain to take it.
            if me is not None:
                self._leave(queue, me)

    def _drained(self, queue: _Queue, task: asyncio.Task[None]) -> None:
        if task in queue.drains:  # cancelled before it started (shutdown): never ran
            self._leave(queue, task)

    def _leave(self, queue: _Queue, task: asyncio.Task[None]) -> None:
        queue.drains.discard(task)
        if queue.drains:
            return
        for waiting in queue.waiting:  # left only when the drains were cancelled (shutdown)
            waiting.future.cancel()
        queue.waiting.clear()
        if self._queues.get(queue.key) is queue:
            del self._queues[queue.key]

    async def _call(
        self, step: OdfvStep, batch: list[_Waiting], full_feature_names: bool
    ) -> list[Outcome]:
        tables = [(w.columns, w.rows) for w in batch]
        rows = sum(w.rows for w in batch)
        if self._metrics is not None:
            self._metrics.observe_shared_call(step.view.name, len(batch))
        ffn = full_feature_names
        if len(batch) == 1:  # raising, so that its pace counts a refusal as untagged do
            alone = partial(transform_columns, step, *tables[0], full_feature_names=ffn)
            try:
                return [await self._dispatch(step, rows, alone)]
            except InvalidRequestError as exc:
                return [exc]
        record = self._records.get(step)
        if record.off:  # sharing ended while these waited
            return await self._each_alone(step, tables, ffn)
        record.shared_calls += 1
        if record.check_due():  # both ways at once, in the threads; the answers alone
            # Each call of its own gets a copy of its table (Feast's aliases go in place, a
            # python UDF may change its lists) while the shared call reads the table.
            copies = [({k: list(v) for k, v in c.items()}, size) for c, size in tables]
            shared, outcomes = await asyncio.gather(
                self._dispatch(
                    step,
                    rows,
                    partial(try_shared, step, tables, full_feature_names=ffn),
                    thread=True,
                ),
                self._each_alone(step, copies, ffn),
            )
            if shared is None:
                self._failed(step, record, outcomes)
                return outcomes
            record.failed_in_a_row = 0
            if differ := differences(shared, outcomes):
                self._stop(step, record, f"a shared call answered {differ} otherwise than alone")
            return outcomes
        try:
            shared = partial(run_shared, step, tables, full_feature_names=ffn)
            outcomes = await self._dispatch(step, rows, shared)
        except InvalidRequestError:
            outcomes = await self._each_alone(step, tables, ffn)
            self._failed(step, record, outcomes)
            return outcomes
        record.failed_in_a_row = 0
        return outcomes  # type: ignore[no-any-return]

    async def _each_alone(
        self, step: OdfvStep, tables: Sequence[Table], full_feature_names: bool
    ) -> list[Outcome]:
        """Each request in a call of its own, spread over the threads (never the loop)."""
        calls = [
            self._dispatch(
                step,
                table[1],
                partial(run_alone, step, table, full_feature_names=full_feature_names),
                thread=True,
            )
            for table in tables
        ]
        return list(await asyncio.gather(*calls))

    def _failed(self, step: OdfvStep, record: _Record, alone: Sequence[Outcome]) -> None:
        """A shared call failed as a whole. When every lookup alone was answered, sharing
        itself is the cause (rows handed back in another order or number): after
        :data:`FAILED_CALLS` such calls in a row the view's lookups are shared no more. A
        refused lookup among them explains the failure (bad request data) and counts not."""
        if any(isinstance(outcome, InvalidRequestError) for outcome in alone):
            return
        record.failed_in_a_row += 1
        if record.failed_in_a_row >= FAILED_CALLS:
            what = f"{FAILED_CALLS} shared calls in a row failed where each lookup alone did not"
            self._stop(step, record, what)

    def _stop(self, step: OdfvStep, record: _Record, what: str) -> None:
        if record.off:
            return
        record.off = True
        log.warning(
            "on-demand feature view %r is tagged row-wise, but %s; its lookups are no longer "
            "shared in this worker (fix the transformation or drop the tag, then `feast apply`)",
            step.view.name,
            what,
        )
        if self._metrics is not None:
            self._metrics.note_row_wise_mismatch(step.view.name)


def _take(waiting: list[_Waiting], max_rows: int) -> list[_Waiting]:
    """The oldest requests that fit in one call (at least one unless all went away),
    removed from ``waiting`` with those whose client went away."""
    waiting[:] = [entry for entry in waiting if not entry.future.done()]
    rows = count = 0
    for entry in waiting:
        if count and rows + entry.rows > max_rows:
            break
        rows += entry.rows
        count += 1
    batch = waiting[:count]
    del waiting[:count]
    return batch


def _copy(exc: BaseException) -> BaseException:
    """A copy of ``exc`` for one more request (or ``exc`` itself if it cannot be copied)."""
    try:
        return copy.copy(exc)
    except Exception:
        return exc


def _settle(batch: Sequence[_Waiting], outcomes: Sequence[Answer | BaseException]) -> None:
    for waiting, outcome in zip(batch, outcomes, strict=True):
        if waiting.future.done():  # its request went away (client disconnected)
            continue
        if isinstance(outcome, BaseException):
            waiting.future.set_exception(outcome)
        else:
            waiting.future.set_result(outcome)
