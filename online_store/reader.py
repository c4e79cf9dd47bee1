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

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

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
from online_store.keys import (
    KEY_INTS,
    KEY_PART_ENCODERS,
    entity_key_from_values,
    entity_key_prefix,
)
from online_store.read_columns import (
    EPOCH,
    MICROSECOND,
    NOT_FOUND,
    NULL_VALUE,
    OUTSIDE_MAX_AGE,
    PRESENT,
    FeatureColumn,
    ViewReadSpec,
    ViewSlot,
    assemble_view,
)
from online_store.value_types import value_type

# The read API: plans and results here, column types from online_store.read_columns.
__all__ = [
    "NOT_FOUND",
    "NULL_VALUE",
    "OUTSIDE_MAX_AGE",
    "PRESENT",
    "FeatureColumn",
    "HmgetPipeline",
    "HmgetReads",
    "RawRead",
    "ReadPlan",
    "ReadResult",
    "ViewReadSpec",
]

# Feast's members (what the plans hold) -> the values their keys hold, inclusive.
_INT_RANGES = {ValueType(code.value): (low, high - 1) for code, (_, low, high) in KEY_INTS.items()}


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
class ReadResult:
    """Columns keyed ``"view:feature"``."""

    columns: dict[str, FeatureColumn]


@dataclass(frozen=True, slots=True)
class _Group:
    join_keys: tuple[str, ...]
    join_key_types: tuple[ValueType, ...]
    fields: tuple[bytes, ...]
    views: tuple[ViewSlot, ...]
    # Entity key bytes = prefix (join key names) + one part per value + suffix (project);
    # one part encoder per join key (sorted order), None for types without a fast encoder.
    key_prefix: bytes = b""
    key_suffix: bytes = b""
    part_encoders: tuple[Callable[[Any], bytes] | None, ...] = ()


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


def _fetch(
    client: redis.Redis | redis.RedisCluster, commands: list[tuple[_Group, list[int], list[bytes]]]
) -> list[Any]:
    """One pipelined round trip of the plan's ``HMGET`` commands (sync redis-py)."""
    with client.pipeline(transaction=False) as pipe:
        for group, _, keys in commands:
            for key in keys:
                pipe.hmget(key, group.fields)  # type: ignore[arg-type]  # redis-py accepts bytes keys
        replies: list[Any] = pipe.execute()
    return replies


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
                    ViewSlot(
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
                    part_encoders=tuple(
                        KEY_PART_ENCODERS.get(value_type(vt)) for vt in types[keys]
                    ),
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
            now_us = (now - EPOCH) // MICROSECOND
        columns: dict[str, FeatureColumn] = {}
        offset = 0
        for group, row_to_unique, keys in commands:
            group_replies = replies[offset : offset + len(keys)]
            offset += len(keys)
            # Every row distinct (the usual request): row j is unique entity j, no fan-out.
            fan_out = None if len(keys) == n else row_to_unique
            for slot in group.views:
                assemble_view(slot, fan_out, group_replies, now_us, columns)
        return ReadResult(columns)

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
        replies = _fetch(client, commands)
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
        replies = _fetch(client, commands)
        out = []
        offset = 0
        for _, row_to_unique, keys in commands:
            out.append(RawRead(row_to_unique, replies[offset : offset + len(keys)]))
            offset += len(keys)
        return out
