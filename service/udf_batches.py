"""Concurrent lookups of a row-wise on-demand view, answered by one call of its transformation.

A view whose owner tags it ``featurestore.row_wise: "true"`` (``service.odfv.ROW_WISE_TAG``)
promises that each output row depends on its own input row alone, as
``inputs["a"] * inputs["b"]`` does and a ``groupby``, a rank or a mean over the frame do
not. Its lookups may then share a call: the requests whose reads finish in the same turn
of the event loop, or while the view's previous call runs in a thread, are handed to the
transformation as one table (up to the runner's ``max_rows`` entity rows), and each request
gets its own rows of the answer. Nothing waits for a batch to fill: a lone request runs
in the next turn of the loop, as it would unbatched.

Only requests whose tables the transformation would see alike share a call: the same
view of the same plan, the same full-feature-names flag, the same columns in the same
order, and in each column the same kinds of value, so the frame has the dtypes each
request's own frame would have. A pandas-mode column must moreover take the plain NumPy
route of :mod:`service.odfv_frames` (Arrow's inference over nulls or mixed kinds could
come out differently for the batch than for a request alone). A call that fails (the UDF
refuses one request's values, say) is made again request by request, so each request
gets the answer or the error it would get alone.

One call of a view runs at a time per worker (where it runs, on the loop or in a
thread, is :class:`service.udf_runner.UdfRunner`'s choice for the batch's rows): the
lookups that arrive meanwhile form the next call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from foundation.errors import InvalidRequestError
from service.odfv import OdfvStep, transform_columns
from service.odfv_frames import numpy_kinds

Answer = dict[str, list[Any]]
Outcome = Answer | InvalidRequestError
# (view step's id, full feature names, ((column, kinds of value), ...))
BatchKey = tuple[int, bool, tuple[tuple[str, frozenset[type]], ...]]
# Runs one call of ``rows`` entity rows where the runner decides.
Dispatch = Callable[[OdfvStep, int, Callable[[], list[Outcome]]], Awaitable[list[Outcome]]]


def batch_key(
    step: OdfvStep, columns: dict[str, list[Any]], *, full_feature_names: bool
) -> BatchKey | None:
    """What requests must share to share a call (see the module notes); None when this
    request's table may not be batched at all."""
    kinds: list[tuple[str, frozenset[type]]] = []
    for name, values in columns.items():
        kind = numpy_kinds(values) if step.in_pandas else frozenset(map(type, values))
        if kind is None:
            return None
        kinds.append((name, kind))
    return id(step), full_feature_names, tuple(kinds)


def run_batch(
    step: OdfvStep,
    tables: Sequence[tuple[dict[str, list[Any]], int]],
    *,
    full_feature_names: bool,
) -> list[Outcome]:
    """Each table's (columns, entity rows) outcome: its answer or its refusal, from one call
    of the transformation over all of them, or, when that call fails, one call each."""
    if len(tables) == 1:
        columns, rows = tables[0]
        try:
            return [transform_columns(step, columns, rows, full_feature_names=full_feature_names)]
        except InvalidRequestError as exc:
            return [exc]
    merged = {name: [v for columns, _ in tables for v in columns[name]] for name in tables[0][0]}
    total = sum(rows for _, rows in tables)
    try:
        answer = transform_columns(step, merged, total, full_feature_names=full_feature_names)
    except InvalidRequestError:
        return [run_batch(step, [t], full_feature_names=full_feature_names)[0] for t in tables]
    outcomes: list[Outcome] = []
    start = 0
    for _, rows in tables:
        outcomes.append({key: values[start : start + rows] for key, values in answer.items()})
        start += rows
    return outcomes


@dataclass(slots=True)
class _Waiting:
    columns: dict[str, list[Any]]
    rows: int
    future: asyncio.Future[Answer]


@dataclass(slots=True)
class _Queue:
    waiting: list[_Waiting] = field(default_factory=list)
    drain: asyncio.Task[None] | None = None


class Batcher:
    """The shared calls of one worker's row-wise views (see the module notes).

    Args:
        dispatch: runs one call where the runner decides.
        max_rows: the most entity rows one shared call is handed.
        observe: told the view's name and the number of lookups of each call.
    """

    def __init__(
        self,
        dispatch: Dispatch,
        *,
        max_rows: int,
        observe: Callable[[str, int], None] | None = None,
    ) -> None:
        self._dispatch = dispatch
        self._max_rows = max_rows
        self._observe = observe
        self._queues: dict[BatchKey, _Queue] = {}

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
            queue = self._queues[key] = _Queue()
            # Starts in the next turn of the loop: the requests of this turn join it.
            queue.drain = loop.create_task(self._drain(step, key, queue, full_feature_names))
        waiting = _Waiting(columns, rows, loop.create_future())
        queue.waiting.append(waiting)
        return await waiting.future

    async def _drain(
        self, step: OdfvStep, key: BatchKey, queue: _Queue, full_feature_names: bool
    ) -> None:
        """Make calls for the queue's requests until none wait, one call at a time."""
        try:
            while queue.waiting:
                batch = _take(queue.waiting, self._max_rows)
                if self._observe is not None:
                    self._observe(step.view.name, len(batch))
                tables = [(w.columns, w.rows) for w in batch]
                rows = sum(w.rows for w in batch)

                def call(tables: list[tuple[dict[str, list[Any]], int]] = tables) -> list[Outcome]:
                    return run_batch(step, tables, full_feature_names=full_feature_names)

                try:
                    outcomes = await self._dispatch(step, rows, call)
                except Exception as exc:  # the worker's state (MemoryError...): every request's
                    _settle(batch, [exc] * len(batch))
                    continue
                _settle(batch, outcomes)
        finally:
            if self._queues.get(key) is queue:
                del self._queues[key]
            for waiting in queue.waiting:  # only when the drain itself was cancelled
                waiting.future.cancel()


def _take(waiting: list[_Waiting], max_rows: int) -> list[_Waiting]:
    """The oldest requests that fit in one call (at least one), removed from ``waiting``."""
    rows = count = 0
    for entry in waiting:
        if count and rows + entry.rows > max_rows:
            break
        rows += entry.rows
        count += 1
    batch = waiting[:count]
    del waiting[:count]
    return batch


def _settle(batch: Sequence[_Waiting], outcomes: Sequence[Answer | BaseException]) -> None:
    for waiting, outcome in zip(batch, outcomes, strict=True):
        if waiting.future.done():  # its request went away (client disconnected)
            continue
        if isinstance(outcome, BaseException):
            waiting.future.set_exception(outcome)
        else:
            waiting.future.set_result(outcome)
