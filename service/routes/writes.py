"""``POST /push`` and ``POST /write-to-online-store`` (Feast's JSON), all-or-nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter

from service.deps import InsightsDep, MetricsDep, SettingsDep, SnapshotDep, StateDep
from service.odfv_writes import write_odfv
from service.push_stats import PushStatistics
from service.schemas import (
    ErrorResponse,
    PushRequest,
    WriteResponse,
    WriteToOnlineStoreRequest,
)
from service.write_values import check_shape
from service.writes import WriteOutcome, push_views, validate_and_write

router = APIRouter(tags=["writes"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (404, 413, 422, 503)
}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _write_and_profile(pushes: PushStatistics, *args: Any, **kwargs: Any) -> WriteOutcome:
    """:func:`validate_and_write`, then profile what was written, in the same thread."""
    outcome = validate_and_write(*args, **kwargs)
    for info, table in outcome.tables:
        pushes.note(info.name, list(info.features), table)
    return outcome


def _answer(outcome: WriteOutcome, metrics: MetricsDep, *, to: Any) -> WriteResponse:
    """The response, after noting the newest event time each view actually stored."""
    for view, stats in outcome.online.items():
        if stats.newest_written_micros is not None:
            newest = _EPOCH + timedelta(microseconds=stats.newest_written_micros)
            metrics.note_pushed(view, newest)
    rows = outcome.tables[0][1].num_rows if outcome.tables else 0
    if outcome.online:
        written = sum(s.rows_written for s in outcome.online.values())
        skipped = sum(s.rows_skipped for s in outcome.online.values())
    else:
        written, skipped = outcome.offline_rows, 0
    return WriteResponse(
        rows=rows,
        written=written,
        skipped_older=skipped,
        offline_written=outcome.offline_rows,
        feature_views=[info.name for info, _ in outcome.tables],
        to=to,
    )


@router.post("/push", summary="Push rows through a push source", responses=_ERRORS)
async def push(
    body: PushRequest,
    state: StateDep,
    snapshot: SnapshotDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    insights: InsightsDep,
) -> WriteResponse:
    """Validate the rows against every view fed by the push source, then write them.

    ``to``: ``online`` (Redis, never replacing a newer stored event), ``offline``
    (appended to the view's Parquet source) or ``online_and_offline``. Nothing is
    written unless every row of every view is valid; event times more than
    ``max_future_skew_seconds`` ahead of the server clock are refused. The answer
    counts the rows written and those skipped as older than the stored row. Offline rows
    are staged first, then written online, then committed offline (:mod:`service.writes`):
    when Redis or the disk fails the answer is 503 and nothing is appended offline;
    retrying the same request is then safe.
    """
    check_shape(body.df, max_rows=settings.max_push_rows)
    views = push_views(snapshot, body.push_source_name)
    online = body.to in ("online", "online_and_offline")
    offline = body.to in ("offline", "online_and_offline")
    outcome = await asyncio.to_thread(
        _write_and_profile,
        insights.pushes,
        state.store,
        state.redis_sync,
        views,
        body.df,
        online=online,
        offline=offline,
        max_future_skew=timedelta(seconds=settings.max_future_skew_seconds),
    )
    return _answer(outcome, metrics, to=body.to)


@router.post("/write-to-online-store", summary="Write rows of one view to Redis", responses=_ERRORS)
async def write_to_online_store(
    body: WriteToOnlineStoreRequest,
    state: StateDep,
    snapshot: SnapshotDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    insights: InsightsDep,
) -> WriteResponse:
    """Validate the rows against the view schema, then write them online.

    A stored row with a newer event time is never replaced by an older one; the
    answer says how many rows were written and how many skipped as older. When Redis
    is down the answer is 503; retrying the same request is then safe.

    An on-demand view with ``write_to_online_store=True`` takes its transformation's
    inputs instead (join keys, source view features, request fields): they are checked,
    then Feast's ``write_to_online_store`` runs the transformation and stores the
    outputs stamped with the time of the write (:mod:`service.odfv_writes`). Feast's
    path does not report per-row outcomes: ``written`` counts the request's distinct
    entity keys (the last row per key is stored) and ``skipped_older`` the other rows.
    """
    check_shape(body.df, max_rows=settings.max_push_rows)
    odfv = snapshot.on_demand_views.get(body.feature_view_name)
    if odfv is not None:
        done = await asyncio.to_thread(write_odfv, state.store, odfv, body.df)
        metrics.note_pushed(odfv.name, datetime.now(UTC))
        return WriteResponse(
            rows=done.rows,
            written=done.entities,
            skipped_older=done.rows - done.entities,
            offline_written=0,
            feature_views=[odfv.name],
            to="online",
        )
    info = snapshot.view(body.feature_view_name)
    outcome = await asyncio.to_thread(
        _write_and_profile,
        insights.pushes,
        state.store,
        state.redis_sync,
        [info],
        body.df,
        online=True,
        offline=False,
        max_future_skew=timedelta(seconds=settings.max_future_skew_seconds),
    )
    return _answer(outcome, metrics, to="online")
