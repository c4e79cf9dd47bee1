"""``POST /push`` and ``POST /write-to-online-store`` (Feast's JSON), all-or-nothing."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pyarrow.compute as pc
from fastapi import APIRouter

from service.deps import MetricsDep, SettingsDep, SnapshotDep, StateDep
from service.schemas import (
    ErrorResponse,
    PushRequest,
    WriteResponse,
    WriteToOnlineStoreRequest,
)
from service.writes import check_shape, push_views, validate_and_write

router = APIRouter(tags=["writes"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (404, 413, 422, 503)
}


def _note_newest(metrics: MetricsDep, tables: list[Any]) -> None:
    for info, table in tables:
        source = info.view.batch_source
        column = source.timestamp_field if source is not None else "event_timestamp"
        newest = pc.max(table.column(column)).as_py()
        if isinstance(newest, datetime):
            metrics.note_pushed(info.name, newest)


@router.post("/push", summary="Push rows through a push source", responses=_ERRORS)
async def push(
    body: PushRequest,
    state: StateDep,
    snapshot: SnapshotDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> WriteResponse:
    """Validate the rows against every view fed by the push source, then write them.

    ``to``: ``online`` (Redis, never replacing a newer stored event), ``offline``
    (appended to the view's Parquet source) or ``online_and_offline``. Nothing is
    written unless every row of every view is valid.
    """
    check_shape(body.df, max_rows=settings.max_push_rows)
    views = push_views(snapshot, body.push_source_name)
    online = body.to in ("online", "online_and_offline")
    offline = body.to in ("offline", "online_and_offline")
    tables = await asyncio.to_thread(
        validate_and_write,
        state.store,
        state.redis_sync,
        views,
        body.df,
        online=online,
        offline=offline,
    )
    if online:
        _note_newest(metrics, tables)
    return WriteResponse(rows=tables[0][1].num_rows if tables else 0,
                         feature_views=[v.name for v in views], to=body.to)  # fmt: skip


@router.post("/write-to-online-store", summary="Write rows of one view to Redis", responses=_ERRORS)
async def write_to_online_store(
    body: WriteToOnlineStoreRequest,
    state: StateDep,
    snapshot: SnapshotDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> WriteResponse:
    """Validate the rows against the view schema, then write them online.

    A stored row with a newer event time is never replaced by an older one.
    """
    check_shape(body.df, max_rows=settings.max_push_rows)
    info = snapshot.view(body.feature_view_name)
    tables = await asyncio.to_thread(
        validate_and_write,
        state.store,
        state.redis_sync,
        [info],
        body.df,
        online=True,
        offline=False,
    )
    _note_newest(metrics, tables)
    return WriteResponse(rows=tables[0][1].num_rows, feature_views=[info.name], to="online")
