"""Feature columns from HMGET replies: statuses, event times, TTL, values decoded per column.

A read plan (online_store.reader) groups a request's views by entity; here one view's
replies become its columns: decoded once per unique entity, a feature at a time, then
fanned out to the request's rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from feast.value_type import ValueType

from online_store.decode import (
    decode_column,
    decode_timestamp,
    decode_value,
    timestamp_datetime,
)

PRESENT = "PRESENT"


NULL_VALUE = "NULL_VALUE"


NOT_FOUND = "NOT_FOUND"


OUTSIDE_MAX_AGE = "OUTSIDE_MAX_AGE"


@dataclass(frozen=True, slots=True)
class ViewReadSpec:
    """What to read from one feature view."""

    name: str
    join_keys: tuple[str, ...]
    join_key_types: tuple[ValueType, ...]
    features: tuple[str, ...]
    ttl_micros: int  # exact microseconds; 0 = values never expire


class FeatureColumn(NamedTuple):
    """One requested feature, one entry per entity row.

    A named tuple rather than a frozen dataclass: a lookup builds one per feature and
    request, and a tuple is several times cheaper to construct.
    """

    values: list[object]
    statuses: list[str]
    event_timestamps: list[datetime | None]


@dataclass(frozen=True, slots=True)
class ViewSlot:
    spec: ViewReadSpec
    ts_index: int
    feature_indexes: tuple[int, ...]
    keys: tuple[str, ...] = ()  # "view:feature" per feature, the result's column keys


# Serialized Timestamp -> (aware datetime, epoch microseconds). A request's entities were
# mostly written by the same materialization, so a handful of distinct timestamps recur.
_TS_CACHE: dict[bytes, tuple[datetime, int]] = {}


_TS_CACHE_MAX = 65536


MICROSECOND = timedelta(microseconds=1)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def event_time(raw: bytes) -> tuple[datetime, int]:
    hit = _TS_CACHE.get(raw)
    if hit is None:
        seconds, nanos = decode_timestamp(raw)
        hit = (timestamp_datetime(raw), seconds * 1_000_000 + nanos // 1000)
        if len(_TS_CACHE) >= _TS_CACHE_MAX:
            _TS_CACHE.clear()
        _TS_CACHE[raw] = hit
    return hit


def assemble_view(
    slot: ViewSlot,
    row_to_unique: list[int] | None,
    replies: list[list[bytes | None]],
    now_us: int,
    columns: dict[str, FeatureColumn],
) -> None:
    """Columns of one view: decoded per unique entity a feature at a time, then fanned
    out to the rows (``row_to_unique`` None: rows are the unique entities)."""
    ttl_us = slot.spec.ttl_micros
    ts_index = slot.ts_index
    m = len(replies)
    if m == 1 and row_to_unique is None:
        assemble_one(slot, replies[0], now_us, columns)
        return
    # Per unique entity: its event time (None: no row) and whether its values count.
    cache = _TS_CACHE
    ts_raws = [reply[ts_index] for reply in replies]
    times: list[datetime | None]
    live: list[int]  # entities with a row inside the TTL
    dead: list[str] = []  # per entity: "" when live, else NOT_FOUND / OUTSIDE_MAX_AGE
    if None not in ts_raws and b"" not in ts_raws:
        # Every entity has a row (the usual case): decode times in one pass.
        events = [cache.get(raw) or event_time(raw) for raw in ts_raws]  # type: ignore[arg-type]
        times = [event[0] for event in events]
        if ttl_us <= 0 or not events or min(e[1] for e in events) >= now_us - ttl_us:
            live = list(range(m))
        else:
            cutoff = now_us - ttl_us
            live = [u for u, event in enumerate(events) if event[1] >= cutoff]
            dead = ["" if event[1] >= cutoff else OUTSIDE_MAX_AGE for event in events]
    else:
        times = []
        live = []
        for u, ts_raw in enumerate(ts_raws):
            if not ts_raw:
                times.append(None)
                dead.append(NOT_FOUND)
                continue
            hit = cache.get(ts_raw)
            event_ts, event_us = hit if hit is not None else event_time(ts_raw)
            times.append(event_ts)
            if ttl_us > 0 and now_us - event_us > ttl_us:
                dead.append(OUTSIDE_MAX_AGE)
            else:
                dead.append("")
                live.append(u)
    all_live = len(live) == m
    live_replies = replies if all_live else [replies[u] for u in live]
    for key, idx in zip(slot.keys, slot.feature_indexes, strict=True):
        raws = [reply[idx] for reply in live_replies]
        if None in raws or b"" in raws:
            # Missing fields (NOT_FOUND) or stored nulls (NULL_VALUE) among them.
            present = [raw for raw in raws if raw]
            decoded = iter(decode_column(present))  # type: ignore[arg-type]
            vals: list[object] = []
            stats: list[str] = []
            for raw in raws:
                if raw is None:
                    vals.append(None)
                    stats.append(NOT_FOUND)
                elif not raw:
                    vals.append(None)
                    stats.append(NULL_VALUE)
                else:
                    value = next(decoded)
                    vals.append(value)
                    stats.append(NULL_VALUE if value is None else PRESENT)
        else:
            vals = decode_column(raws)  # type: ignore[arg-type]
            if None in vals:  # e.g. a NaT timestamp decodes to None
                stats = [NULL_VALUE if v is None else PRESENT for v in vals]
            else:
                stats = [PRESENT] * len(vals)
        if not all_live:
            full_vals: list[object] = [None] * m
            full_stats = list(dead)
            for k, u in enumerate(live):
                full_vals[u] = vals[k]
                full_stats[u] = stats[k]
            vals, stats = full_vals, full_stats
        col_times = times
        if NOT_FOUND in stats:
            col_times = [None if st == NOT_FOUND else t for st, t in zip(stats, times, strict=True)]
        if row_to_unique is not None:
            vals = [vals[u] for u in row_to_unique]
            stats = [stats[u] for u in row_to_unique]
            col_times = [col_times[u] for u in row_to_unique]
        columns[key] = FeatureColumn(vals, stats, col_times)


def assemble_one(
    slot: ViewSlot,
    reply: list[bytes | None],
    now_us: int,
    columns: dict[str, FeatureColumn],
) -> None:
    """:meth:`_assemble_view` for a single entity row (no column machinery)."""
    ts_raw = reply[slot.ts_index]
    if not ts_raw:
        for key in slot.keys:
            columns[key] = FeatureColumn([None], [NOT_FOUND], [None])
        return
    hit = _TS_CACHE.get(ts_raw)
    event_ts, event_us = hit if hit is not None else event_time(ts_raw)
    ttl_us = slot.spec.ttl_micros
    if ttl_us > 0 and now_us - event_us > ttl_us:
        for key in slot.keys:
            columns[key] = FeatureColumn([None], [OUTSIDE_MAX_AGE], [event_ts])
        return
    for key, idx in zip(slot.keys, slot.feature_indexes, strict=True):
        raw = reply[idx]
        if raw is None:
            column = FeatureColumn([None], [NOT_FOUND], [None])
        elif not raw:
            column = FeatureColumn([None], [NULL_VALUE], [event_ts])
        else:
            value = decode_value(raw)
            column = FeatureColumn([value], [NULL_VALUE if value is None else PRESENT], [event_ts])
        columns[key] = column
