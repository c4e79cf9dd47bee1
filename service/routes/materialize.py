"""``POST /materialize``, ``POST /materialize-incremental`` and ``GET /materialize/{id}``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, status

from foundation.errors import InvalidRequestError, InvalidTimestampError, show
from service.catalog import RegistrySnapshot
from service.deps import JobsDep, SettingsDep, SnapshotDep
from service.schemas import (
    ErrorResponse,
    MaterializeIncrementalRequest,
    MaterializeJob,
    MaterializeRequest,
)

router = APIRouter(tags=["materialization"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (404, 409, 422, 503)
}


def parse_timestamp(value: str, field: str) -> datetime:
    """An RFC 3339 / ISO 8601 string as aware UTC (naive input is UTC).

    Raises:
        InvalidTimestampError: unparseable, or outside years 1..9999 once in UTC.
    """
    try:
        ts = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidTimestampError(
            f"{field} {show(value)} is not a timestamp; use RFC 3339, e.g. 2026-11-26T00:00:00Z",
            field=field,
        ) from None
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    try:
        return ts.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        raise InvalidTimestampError(
            f"{field} {show(value)} falls outside years 1..9999 once converted to UTC; "
            "give a time inside that range",
            field=field,
        ) from None


def check_not_future(end: datetime, field: str, skew_seconds: float) -> None:
    """Refuse a window end too far ahead of the server clock.

    A window ending in year 9999 loads rows stamped in the future, which then pin their
    values until that time, and moves the incremental start past every real row.

    Args:
        end: the window end (aware UTC).
        field: the request field, for the message.
        skew_seconds: the allowed lead over the server clock.

    Raises:
        InvalidTimestampError: ``end`` is beyond now + ``skew_seconds``.
    """
    limit = datetime.now(UTC) + timedelta(seconds=skew_seconds)
    if end > limit:
        raise InvalidTimestampError(
            f"{field} {end.isoformat()} is more than {skew_seconds:g} s ahead of the server "
            f"clock (limit {limit.isoformat()}, FEATURESTORE_MAX_FUTURE_SKEW_SECONDS); "
            "materialize up to now",
            field=field,
            limit=limit.isoformat(),
        )


def _views(snapshot: RegistrySnapshot, names: list[str] | None) -> list[str]:
    if names is None:
        chosen = [name for name, info in snapshot.views.items() if info.view.online]
    else:
        chosen = list(dict.fromkeys(names))
        for name in chosen:
            if not snapshot.view(name).view.online:
                raise InvalidRequestError(
                    f"feature view {name!r} has online=False, so it is never materialized; "
                    "set online=True and run `feast apply`",
                    feature_view=name,
                )
    if not chosen:
        raise InvalidRequestError(
            "no feature views to materialize; name some in feature_views or register "
            "online views with `feast apply`"
        )
    return chosen


@router.post(
    "/materialize",
    summary="Materialize a time window into Redis (background job)",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_ERRORS,
)
async def materialize(
    body: MaterializeRequest, snapshot: SnapshotDep, jobs: JobsDep, settings: SettingsDep
) -> MaterializeJob:
    """Start a job loading ``[start_ts, end_ts)`` of each view into Redis.

    Answers 202 with the job (poll ``GET /materialize/{job_id}``), or 409 when one of
    the views is already being materialized. ``end_ts`` more than
    ``max_future_skew_seconds`` ahead of the server clock is a 422.
    """
    if body.disable_event_timestamp:
        start, end = datetime(1970, 1, 1, tzinfo=UTC), datetime.now(UTC)
    else:
        if not body.start_ts or not body.end_ts:
            raise InvalidTimestampError(
                "start_ts and end_ts are required (or set disable_event_timestamp: true)"
            )
        start = parse_timestamp(body.start_ts, "start_ts")
        end = parse_timestamp(body.end_ts, "end_ts")
        if start >= end:
            raise InvalidTimestampError(
                f"start_ts {show(body.start_ts)} must be before end_ts {show(body.end_ts)}"
            )
        check_not_future(end, "end_ts", settings.max_future_skew_seconds)
    views = _views(snapshot, body.feature_views)
    return await jobs.submit(kind="materialize", views=views, start=start, end=end)


@router.post(
    "/materialize-incremental",
    summary="Materialize from each view's last run up to end_ts (background job)",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_ERRORS,
)
async def materialize_incremental(
    body: MaterializeIncrementalRequest, snapshot: SnapshotDep, jobs: JobsDep, settings: SettingsDep
) -> MaterializeJob:
    """Like ``feast materialize-incremental END_TS``, as a job (202, or 409 if busy).

    ``end_ts`` more than ``max_future_skew_seconds`` ahead of the server clock is a 422:
    the next run would start there and load nothing until someone ran a full window.
    """
    end = parse_timestamp(body.end_ts, "end_ts")
    check_not_future(end, "end_ts", settings.max_future_skew_seconds)
    views = _views(snapshot, body.feature_views)
    return await jobs.submit(kind="materialize-incremental", views=views, start=None, end=end)


@router.get(
    "/materialize/{job_id}",
    summary="State and progress of a materialization job",
    responses={404: {"model": ErrorResponse}},
)
async def get_job(job_id: str, jobs: JobsDep) -> MaterializeJob:
    """``pending`` -> ``running`` -> ``succeeded`` | ``failed``, with rows per view."""
    return await jobs.get(job_id)
