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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis
import redis.asyncio
from feast.value_type import ValueType

from online_store.codec import (
    check_entity_type,
    field_name,
    ts_field,
)
from online_store.decode import decode_value, timestamp_datetime
from online_store.keys import entity_key_from_values
from service.errors import InvalidEntityError

PRESENT = "PRESENT"
NULL_VALUE = "NULL_VALUE"
NOT_FOUND = "NOT_FOUND"
OUTSIDE_MAX_AGE = "OUTSIDE_MAX_AGE"

_INT_RANGES = {ValueType.INT64: (-(2**63), 2**63 - 1), ValueType.INT32: (-(2**31), 2**31 - 1)}


@dataclass(frozen=True, slots=True)
class ViewReadSpec:
    """What to read from one feature view."""

    name: str
    join_keys: tuple[str, ...]
    join_key_types: tuple[ValueType, ...]
    features: tuple[str, ...]
    ttl_seconds: int


@dataclass(frozen=True, slots=True)
class FeatureColumn:
    """One requested feature, one entry per entity row."""

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


@dataclass(frozen=True, slots=True)
class _Group:
    join_keys: tuple[str, ...]
    join_key_types: tuple[ValueType, ...]
    fields: tuple[bytes, ...]
    views: tuple[_ViewSlot, ...]


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
                f"join key '{key}' expects an integer ({vt.name}), got {value!r}; "
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
            f"join key '{key}' expects a string, got {value!r}; send it as a JSON string",
            join_key=key,
        )
    if vt == ValueType.BYTES and not isinstance(value, bytes):
        raise InvalidEntityError(
            f"join key '{key}' expects bytes, got {type(value).__name__}", join_key=key
        )
    return value


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
                slots.append(_ViewSlot(spec, len(fields) - 1, tuple(feature_indexes)))
            groups.append(_Group(keys, types[keys], tuple(fields), tuple(slots)))
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
                columns.append([_check_value(key, vt, v) for v in entities[key]])
            unique: dict[tuple[object, ...], int] = {}
            row_to_unique = [
                unique.setdefault(row, len(unique)) for row in zip(*columns, strict=True)
            ]
            if not group.join_keys:
                row_to_unique = [0] * n
                unique = {(): 0}
            keys = [
                entity_key_from_values(row, group.join_keys, group.join_key_types, self.project)
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
        now = now or datetime.now(UTC)
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)  # naive times are UTC (STYLE.md)
        columns: dict[str, FeatureColumn] = {}
        offset = 0
        for group, row_to_unique, keys in commands:
            group_replies = replies[offset : offset + len(keys)]
            offset += len(keys)
            for slot in group.views:
                self._assemble_view(slot, row_to_unique, group_replies, now, columns)
        del n
        return ReadResult(columns)

    @staticmethod
    def _assemble_view(
        slot: _ViewSlot,
        row_to_unique: list[int],
        replies: list[list[bytes | None]],
        now: datetime,
        columns: dict[str, FeatureColumn],
    ) -> None:
        ttl = slot.spec.ttl_seconds
        # Decode per unique entity, then fan out to rows (duplicates share the work).
        per_unique: list[tuple[list[object], list[str], datetime | None]] = []
        nf = len(slot.feature_indexes)
        for reply in replies:
            ts_raw = reply[slot.ts_index]
            if not ts_raw:
                per_unique.append(([None] * nf, [NOT_FOUND] * nf, None))
                continue
            event_ts = timestamp_datetime(ts_raw)
            if ttl > 0 and (now - event_ts).total_seconds() > ttl:
                per_unique.append(([None] * nf, [OUTSIDE_MAX_AGE] * nf, event_ts))
                continue
            values: list[object] = []
            statuses: list[str] = []
            for idx in slot.feature_indexes:
                raw = reply[idx]
                if raw is None:
                    values.append(None)
                    statuses.append(NOT_FOUND)
                    continue
                value = decode_value(raw)
                values.append(value)
                statuses.append(NULL_VALUE if value is None else PRESENT)
            per_unique.append((values, statuses, event_ts))
        name = slot.spec.name
        for j, feature in enumerate(slot.spec.features):
            vals: list[object] = []
            stats: list[str] = []
            times: list[datetime | None] = []
            for u in row_to_unique:
                fvals, fstats, ts = per_unique[u]
                vals.append(fvals[j])
                stats.append(fstats[j])
                times.append(None if fstats[j] == NOT_FOUND else ts)
            columns[f"{name}:{feature}"] = FeatureColumn(vals, stats, times)

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
        client: redis.asyncio.Redis | redis.asyncio.RedisCluster,
        entities: Mapping[str, Sequence[object]],
        *,
        now: datetime | None = None,
    ) -> ReadResult:
        """Async twin of :meth:`read` (same plan and decoding; only the I/O differs).

        Args:
            client: an asyncio redis-py client with ``decode_responses=False``.
            entities: join key -> values, one value per entity row.
            now: the reference time for TTL checks.

        Returns:
            One column per ``view:feature``.

        Raises:
            InvalidEntityError: as :meth:`read`.
        """
        n, commands = self._commands(entities)
        pipe = client.pipeline(transaction=False)
        for group, _, keys in commands:
            for key in keys:
                pipe.hmget(key, group.fields)  # type: ignore[arg-type]  # redis-py accepts bytes keys
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
