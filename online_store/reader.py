"""Online reads: many views, many entities, one pipelined Redis round trip.

A :class:`ReadPlan` is compiled once per set of views (the caller caches it) and holds
every hash field name precomputed. Views with the same join keys share one Redis hash
per entity, so they share one ``HMGET`` per unique entity row. Per request there is no
registry access and no protobuf object per scalar value; the sync and async paths share
everything except the pipeline ``execute`` call.

Statuses (DESIGN.md): no stored row -> ``NOT_FOUND``; ``ttl > 0`` and
``now - event_ts > ttl`` -> ``OUTSIDE_MAX_AGE`` (value None); stored null ->
``NULL_VALUE``; else ``PRESENT``.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

import numpy as np
import redis
import redis.asyncio
import redis.asyncio.client
import redis.asyncio.cluster
from feast.value_type import ValueType

from foundation.errors import InvalidEntityError, show
from online_store.codec import (
    check_entity_type,
    field_name,
    ts_field,
)
from online_store.decode import (
    decode_column,
    decode_timestamp,
    decode_value,
    timestamp_datetime,
)
from online_store.keys import entity_key_from_values, entity_key_prefix

PRESENT = "PRESENT"
NULL_VALUE = "NULL_VALUE"
NOT_FOUND = "NOT_FOUND"
OUTSIDE_MAX_AGE = "OUTSIDE_MAX_AGE"

_INT_RANGES = {ValueType.INT64: (-(2**63), 2**63 - 1), ValueType.INT32: (-(2**31), 2**31 - 1)}


class HmgetPipeline(Protocol):
    """A non-transactional pipeline that queues a group's HMGETs in one call."""

    def hmget_many(self, keys: Sequence[bytes], fields: Sequence[bytes]) -> object:
        """Queue ``HMGET key field...`` for each key, in order."""
        ...

    async def execute(self) -> list[Any]:
        """Send the queue in one round trip; one reply per command, in order."""
        ...


class HmgetReads(Protocol):
    """An async client whose pipelines are :class:`HmgetPipeline` (``service.redis_fast``)."""

    def pipeline(self, transaction: bool = False) -> HmgetPipeline:
        """A new non-transactional pipeline."""
        ...


@dataclass(frozen=True, slots=True)
class ViewReadSpec:
    """What to read from one feature view."""

    name: str
    join_keys: tuple[str, ...]
    join_key_types: tuple[ValueType, ...]
    features: tuple[str, ...]
    ttl_seconds: int


class FeatureColumn(NamedTuple):
    """One requested feature, one entry per entity row.

    A named tuple rather than a frozen dataclass: a lookup builds one per feature and
    request, and a tuple is several times cheaper to construct.
    """

    values: list[object]
    statuses: list[str]
    event_timestamps: list[datetime | None]


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Columns keyed ``"view:feature"``."""

    columns: dict[str, FeatureColumn]


@dataclass(frozen=True, slots=True)
class _ViewSlot:
    spec: ViewReadSpec
    ts_index: int
    feature_indexes: tuple[int, ...]
    keys: tuple[str, ...] = ()  # "view:feature" per feature, the result's column keys


@dataclass(frozen=True, slots=True)
class _Group:
    join_keys: tuple[str, ...]
    join_key_types: tuple[ValueType, ...]
    fields: tuple[bytes, ...]
    views: tuple[_ViewSlot, ...]
    # Entity key bytes = prefix (join key names) + one part per value + suffix (project);
    # one part encoder per join key (sorted order), None for types without a fast encoder.
    key_prefix: bytes = b""
    key_suffix: bytes = b""
    part_encoders: tuple[Callable[[Any], bytes] | None, ...] = ()


_PACK_Q = struct.Struct("<q").pack
_PACK_I = struct.Struct("<i").pack
_PACK_II = struct.Struct("<II").pack
_INT64_HEAD = _PACK_II(4, 8)
_INT32_HEAD = _PACK_II(3, 4)


def _int64_part(value: int) -> bytes:
    return _INT64_HEAD + _PACK_Q(value)


def _int32_part(value: int) -> bytes:
    return _INT32_HEAD + _PACK_I(value)


def _string_part(value: str) -> bytes:
    raw = value.encode()
    return _PACK_II(2, len(raw)) + raw


_PART_ENCODERS: dict[ValueType, Callable[[Any], bytes]] = {
    ValueType.INT64: _int64_part,
    ValueType.INT32: _int32_part,
    ValueType.STRING: _string_part,
}

# Serialized Timestamp -> (aware datetime, epoch microseconds). A request's entities were
# mostly written by the same materialization, so a handful of distinct timestamps recur.
_TS_CACHE: dict[bytes, tuple[datetime, int]] = {}
_TS_CACHE_MAX = 65536
_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _event_time(raw: bytes) -> tuple[datetime, int]:
    hit = _TS_CACHE.get(raw)
    if hit is None:
        seconds, nanos = decode_timestamp(raw)
        hit = (timestamp_datetime(raw), seconds * 1_000_000 + nanos // 1000)
        if len(_TS_CACHE) >= _TS_CACHE_MAX:
            _TS_CACHE.clear()
        _TS_CACHE[raw] = hit
    return hit


@dataclass(frozen=True, slots=True)
class RawRead:
    """Rows of one group after the round trip: unique entities and their HMGET replies."""

    row_to_unique: list[int]
    replies: list[list[bytes | None]]


def _check_value(key: str, vt: ValueType, value: object) -> object:
    if vt in _INT_RANGES:
        if isinstance(value, np.integer):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidEntityError(
                f"join key '{key}' expects an integer ({vt.name}), got {show(value)}; "
                "send it as a JSON number",
                join_key=key,
            )
        lo, hi = _INT_RANGES[vt]
        if not lo <= value <= hi:
            raise InvalidEntityError(
                f"join key '{key}' value {value} is out of range for {vt.name}", join_key=key
            )
        return value
    if vt == ValueType.STRING and not isinstance(value, str):
        raise InvalidEntityError(
            f"join key '{key}' expects a string, got {show(value)}; send it as a JSON string",
            join_key=key,
        )
    if vt == ValueType.BYTES and not isinstance(value, bytes):
        raise InvalidEntityError(
            f"join key '{key}' expects bytes, got {type(value).__name__}", join_key=key
        )
    return value


def _check_column(key: str, vt: ValueType, values: Sequence[object]) -> list[object]:
    """``[_check_value(key, vt, v) for v in values]``, with the common cases in bulk."""
    if vt in _INT_RANGES:
        if all(type(v) is int for v in values):  # not bool, not numpy: those take the slow path
            lo, hi = _INT_RANGES[vt]
            if not values or (lo <= min(values) and max(values) <= hi):  # type: ignore[type-var, operator]
                return list(values)
    elif vt == ValueType.STRING and all(type(v) is str for v in values):
        return list(values)
    return [_check_value(key, vt, v) for v in values]


class ReadPlan:
    """Precompiled hash keys and fields for a fixed set of views."""

    def __init__(self, project: str, groups: tuple[_Group, ...]) -> None:
        self.project = project
        self.groups = groups

    @classmethod
    def compile(cls, project: str, views: Sequence[ViewReadSpec]) -> ReadPlan:
        """Build a plan; do this once per feature set and cache it.

        Args:
            project: Feast project (the key suffix).
            views: the views and features to read.

        Returns:
            The plan.

        Raises:
            UnsupportedTypeError: a join key type cannot be encoded.
        """
        by_keys: dict[tuple[str, ...], list[ViewReadSpec]] = {}
        types: dict[tuple[str, ...], tuple[ValueType, ...]] = {}
        for spec in views:
            for key, vt in zip(spec.join_keys, spec.join_key_types, strict=True):
                check_entity_type(spec.name, key, vt)
            order = sorted(range(len(spec.join_keys)), key=lambda i: spec.join_keys[i])
            sorted_keys = tuple(spec.join_keys[i] for i in order)
            by_keys.setdefault(sorted_keys, []).append(spec)
            types[sorted_keys] = tuple(spec.join_key_types[i] for i in order)
        groups = []
        for keys, specs in by_keys.items():
            fields: list[bytes] = []
            slots = []
            for spec in specs:
                feature_indexes = []
                for feature in spec.features:
                    feature_indexes.append(len(fields))
                    fields.append(field_name(spec.name, feature))
                fields.append(ts_field(spec.name))
                slots.append(
                    _ViewSlot(
                        spec,
                        len(fields) - 1,
                        tuple(feature_indexes),
                        tuple(f"{spec.name}:{feature}" for feature in spec.features),
                    )
                )
            groups.append(
                _Group(
                    keys,
                    types[keys],
                    tuple(fields),
                    tuple(slots),
                    key_prefix=entity_key_prefix(keys),
                    key_suffix=project.encode(),
                    part_encoders=tuple(_PART_ENCODERS.get(vt) for vt in types[keys]),
                )
            )
        return cls(project, tuple(groups))

    def _commands(
        self, entities: Mapping[str, Sequence[object]]
    ) -> tuple[int, list[tuple[_Group, list[int], list[bytes]]]]:
        lengths = {len(v) for v in entities.values()}
        if len(lengths) > 1:
            detail = ", ".join(f"{k}={len(v)}" for k, v in entities.items())
            raise InvalidEntityError(
                f"entity value lists have different lengths ({detail}); send one value per "
                "entity row for every join key"
            )
        n = lengths.pop() if lengths else 0
        out = []
        for group in self.groups:
            columns = []
            for key, vt in zip(group.join_keys, group.join_key_types, strict=True):
                if key not in entities:
                    views = ", ".join(s.spec.name for s in group.views)
                    raise InvalidEntityError(
                        f"join key '{key}' is missing; feature view(s) {views} need it in "
                        "'entities'",
                        join_key=key,
                    )
                columns.append(_check_column(key, vt, entities[key]))
            if not group.join_keys:
                row_to_unique = [0] * n
                keys = [group.key_prefix + group.key_suffix]
            elif len(columns) == 1 and group.part_encoders[0] is not None:
                # One join key (the common case): the values themselves are the row ids.
                single: dict[object, int] = {}
                row_to_unique = [single.setdefault(v, len(single)) for v in columns[0]]
                encode = group.part_encoders[0]
                prefix, suffix = group.key_prefix, group.key_suffix
                keys = [prefix + encode(v) + suffix for v in single]
            else:
                unique: dict[tuple[object, ...], int] = {}
                row_to_unique = [
                    unique.setdefault(row, len(unique)) for row in zip(*columns, strict=True)
                ]
                if all(e is not None for e in group.part_encoders):
                    encoders = group.part_encoders
                    prefix, suffix = group.key_prefix, group.key_suffix
                    keys = [
                        prefix
                        + b"".join(e(v) for e, v in zip(encoders, row, strict=True))  # type: ignore[misc]
                        + suffix
                        for row in unique
                    ]
                else:
                    keys = [
                        entity_key_from_values(
                            row, group.join_keys, group.join_key_types, self.project
                        )
                        for row in unique
                    ]
            out.append((group, row_to_unique, keys))
        return n, out

    def _assemble(
        self,
        n: int,
        commands: list[tuple[_Group, list[int], list[bytes]]],
        replies: list[list[bytes | None]],
        now: datetime | None,
    ) -> ReadResult:
        if now is None:
            now_us = time.time_ns() // 1000
        else:
            if now.tzinfo is None:
                now = now.replace(tzinfo=UTC)  # naive times are UTC (STYLE.md)
            now_us = (now - _EPOCH) // _MICROSECOND
        columns: dict[str, FeatureColumn] = {}
        offset = 0
        for group, row_to_unique, keys in commands:
            group_replies = replies[offset : offset + len(keys)]
            offset += len(keys)
            # Every row distinct (the usual request): row j is unique entity j, no fan-out.
            fan_out = None if len(keys) == n else row_to_unique
            for slot in group.views:
                self._assemble_view(slot, fan_out, group_replies, now_us, columns)
        return ReadResult(columns)

    @staticmethod
    def _assemble_one(
        slot: _ViewSlot,
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
        event_ts, event_us = hit if hit is not None else _event_time(ts_raw)
        ttl_us = slot.spec.ttl_seconds * 1_000_000
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
                column = FeatureColumn(
                    [value], [NULL_VALUE if value is None else PRESENT], [event_ts]
                )
            columns[key] = column

    @staticmethod
    def _assemble_view(
        slot: _ViewSlot,
        row_to_unique: list[int] | None,
        replies: list[list[bytes | None]],
        now_us: int,
        columns: dict[str, FeatureColumn],
    ) -> None:
        """Columns of one view: decoded per unique entity a feature at a time, then fanned
        out to the rows (``row_to_unique`` None: rows are the unique entities)."""
        ttl_us = slot.spec.ttl_seconds * 1_000_000
        ts_index = slot.ts_index
        m = len(replies)
        if m == 1 and row_to_unique is None:
            ReadPlan._assemble_one(slot, replies[0], now_us, columns)
            return
        # Per unique entity: its event time (None: no row) and whether its values count.
        cache = _TS_CACHE
        ts_raws = [reply[ts_index] for reply in replies]
        times: list[datetime | None]
        live: list[int]  # entities with a row inside the TTL
        dead: list[str] = []  # per entity: "" when live, else NOT_FOUND / OUTSIDE_MAX_AGE
        if None not in ts_raws and b"" not in ts_raws:
            # Every entity has a row (the usual case): decode times in one pass.
            events = [cache.get(raw) or _event_time(raw) for raw in ts_raws]  # type: ignore[arg-type]
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
                event_ts, event_us = hit if hit is not None else _event_time(ts_raw)
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
                col_times = [
                    None if st == NOT_FOUND else t for st, t in zip(stats, times, strict=True)
                ]
            if row_to_unique is not None:
                vals = [vals[u] for u in row_to_unique]
                stats = [stats[u] for u in row_to_unique]
                col_times = [col_times[u] for u in row_to_unique]
            columns[key] = FeatureColumn(vals, stats, col_times)

    def entity_keys(self, entities: Mapping[str, Sequence[object]]) -> list[bytes]:
        """The Redis keys of the entity rows (unique, every group of the plan).

        Args:
            entities: join key -> values, one value per entity row.

        Returns:
            The hash keys, each once.

        Raises:
            InvalidEntityError: as :meth:`read`.
        """
        _, commands = self._commands(entities)
        return list(dict.fromkeys(key for _, _, keys in commands for key in keys))

    def read(
        self,
        client: redis.Redis | redis.RedisCluster,
        entities: Mapping[str, Sequence[object]],
        *,
        now: datetime | None = None,
    ) -> ReadResult:
        """Read every planned feature for the entity rows in one pipelined round trip.

        Args:
            client: a redis-py client with ``decode_responses=False``.
            entities: join key -> values, one value per entity row (column-oriented).
            now: the reference time for TTL checks (default: current UTC time).

        Returns:
            One column per ``view:feature``, one entry per entity row.

        Raises:
            InvalidEntityError: a join key is missing, mistyped, or the lists differ in length.
        """
        n, commands = self._commands(entities)
        with client.pipeline(transaction=False) as pipe:
            for group, _, keys in commands:
                for key in keys:
                    pipe.hmget(key, group.fields)  # type: ignore[arg-type]  # redis-py accepts bytes keys
            replies: list[Any] = pipe.execute()
        return self._assemble(n, commands, replies, now)

    async def read_async(
        self,
        client: HmgetReads | redis.asyncio.Redis | redis.asyncio.RedisCluster,
        entities: Mapping[str, Sequence[object]],
        *,
        now: datetime | None = None,
    ) -> ReadResult:
        """Async twin of :meth:`read` (same plan and decoding; only the I/O differs).

        Args:
            client: an asyncio redis-py client with ``decode_responses=False``, or a client
                whose pipelines queue a group's keys at once (:class:`HmgetReads`, such as
                the service's auto-pipelining one).
            entities: join key -> values, one value per entity row.
            now: the reference time for TTL checks.

        Returns:
            One column per ``view:feature``.

        Raises:
            InvalidEntityError: as :meth:`read`.
        """
        n, commands = self._commands(entities)
        pipe = client.pipeline(transaction=False)
        if isinstance(pipe, redis.asyncio.client.Pipeline | redis.asyncio.cluster.ClusterPipeline):
            for group, _, keys in commands:
                for key in keys:
                    pipe.hmget(key, group.fields)  # type: ignore[arg-type]  # bytes keys are fine
        else:
            for group, _, keys in commands:
                pipe.hmget_many(keys, group.fields)
        replies: list[Any] = await pipe.execute()
        return self._assemble(n, commands, replies, now)

    def read_raw(
        self, client: redis.Redis | redis.RedisCluster, entities: Mapping[str, Sequence[object]]
    ) -> list[RawRead]:
        """The undecoded replies per group (for the Feast plugin, which needs protobufs).

        Args:
            client: a redis-py client.
            entities: join key -> values.

        Returns:
            One :class:`RawRead` per group, in plan order.
        """
        _, commands = self._commands(entities)
        with client.pipeline(transaction=False) as pipe:
            for group, _, keys in commands:
                for key in keys:
                    pipe.hmget(key, group.fields)  # type: ignore[arg-type]  # redis-py accepts bytes keys
            replies: list[Any] = pipe.execute()
        out = []
        offset = 0
        for _, row_to_unique, keys in commands:
            out.append(RawRead(row_to_unique, replies[offset : offset + len(keys)]))
            offset += len(keys)
        return out
