"""Time-based train / validation / test splits of a training dataset.

Rows are assigned by their timestamp, never at random, so that validation and test rows are
strictly later than every training row: what a model will face in production. Rows sharing a
timestamp always land in the same split.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from foundation.errors import InvalidRequestError, InvalidTimestampError

Frame = TypeVar("Frame", pd.DataFrame, pa.Table)


@dataclass(frozen=True, slots=True)
class Split(Generic[Frame]):
    """The three parts; ``train_until``/``validation_until`` are the cut-offs used."""

    train: Frame
    validation: Frame
    test: Frame
    train_until: datetime
    validation_until: datetime


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _times(data: pd.DataFrame | pa.Table, column: str) -> pa.ChunkedArray:
    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    if column not in table.column_names:
        raise InvalidTimestampError(
            f"no timestamp column {column!r} to split on (columns: {table.column_names})",
            column=column,
        )
    times = table[column]
    if not pa.types.is_timestamp(times.type):
        raise InvalidTimestampError(f"column {column!r} is {times.type}, not a timestamp")
    if times.type.tz is None:
        times = pc.assume_timezone(times, "UTC")
    # Nanoseconds stay nanoseconds and compare exactly (a cast to microseconds would refuse a
    # time with a nanosecond part); coarser units become microseconds, exactly.
    return pc.cast(times, pa.timestamp(_unit(times), tz="UTC"))


def _unit(times: pa.ChunkedArray) -> str:
    return "ns" if times.type.unit == "ns" else "us"


def _instant(ticks: int, unit: str) -> datetime:
    """A time of ``ticks`` (of ``unit`` since the epoch, UTC): a ``datetime`` when it is whole
    microseconds, else a ``pd.Timestamp`` (a ``datetime`` that keeps nanoseconds)."""
    stamp = pd.Timestamp(ticks, unit=unit, tz="UTC")
    return stamp.to_pydatetime() if stamp.nanosecond == 0 else stamp


def _cutoffs(
    times: pa.ChunkedArray, fractions: tuple[float, float, float]
) -> tuple[datetime, datetime]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise InvalidRequestError(
            f"fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    n = len(times)
    if n == 0:
        raise InvalidRequestError("cannot split an empty dataset")
    unit = _unit(times)
    ticks = pc.cast(pc.take(times, pc.sort_indices(times)), pa.int64())

    def at(share: float) -> datetime:
        index = round(share * n)
        if index >= n:
            # Everything goes before this cut-off: one tick (a nano- or microsecond) past
            # the last row.
            return _instant(ticks[n - 1].as_py() + 1, unit)
        return _instant(ticks[index].as_py(), unit)

    return at(fractions[0]), at(fractions[0] + fractions[1])


def time_split(
    data: Frame,
    *,
    timestamp_column: str = "event_timestamp",
    train_until: datetime | None = None,
    validation_until: datetime | None = None,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> Split[Frame]:
    """Split rows into train (``t < train_until``), validation (``train_until <= t <
    validation_until``) and test (``t >= validation_until``).

    Without explicit cut-offs they are chosen at the time quantiles given by ``fractions``;
    ties stay together, so the parts are only approximately that size. Naive times are UTC.

    Args:
        data: a DataFrame or Arrow table.
        timestamp_column: the column to split on.
        train_until: first instant not in train.
        validation_until: first instant in test.
        fractions: target shares when cut-offs are not given.

    Returns:
        The three parts (same type as ``data``, original row order kept) and the cut-offs.

    Raises:
        InvalidRequestError: bad fractions, cut-offs out of order, or no rows.
        InvalidTimestampError: the column is missing or not a timestamp.
    """
    times = _times(data, timestamp_column)
    if train_until is None or validation_until is None:
        auto_train, auto_validation = _cutoffs(times, fractions)
        train_until = train_until or auto_train
        validation_until = validation_until or auto_validation
    train_until, validation_until = _utc(train_until), _utc(validation_until)
    if validation_until < train_until:
        raise InvalidRequestError(
            f"validation_until {validation_until} is before train_until {train_until}"
        )
    lo = pa.scalar(train_until, pa.timestamp(_unit(times), tz="UTC"))
    hi = pa.scalar(validation_until, pa.timestamp(_unit(times), tz="UTC"))
    masks = [
        pc.less(times, lo),
        pc.and_(pc.greater_equal(times, lo), pc.less(times, hi)),
        pc.greater_equal(times, hi),
    ]
    if isinstance(data, pa.Table):
        parts = [data.filter(m) for m in masks]
    else:
        parts = [data[m.to_numpy(zero_copy_only=False)].reset_index(drop=True) for m in masks]
    return Split(parts[0], parts[1], parts[2], train_until, validation_until)
