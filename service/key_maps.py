"""Join key maps: which request column feeds each join key of a read view.

A feature service can read one view for several entities of one kind, Feast's
origin/destination pattern::

    location_stats.with_name("origin").with_join_key_map({"location_id": "origin_id"})
    location_stats.with_name("dest").with_join_key_map({"location_id": "dest_id"})

Each projection reads the view's own Redis hashes, whose keys serialize the view's join
key name (``location_id``), with the values of its mapped request column (``origin_id``),
as Feast's ``_get_table_entity_values`` renames the column back before building the key.
On-demand views may declare such a projection as a source too.

A compiled plan holds one :class:`MappedRead` per distinct map among the views it reads,
the identity first: a :class:`~online_store.reader.ReadPlan` over the views read through
that map and the suffix that keeps their columns apart in the merged result
(``location_stats:temp`` and ``location_stats[location_id=origin_id]:temp``). The reads
are issued together: ``FastRedis`` sends what requests queue in one event-loop turn in
one write, so a request still takes one round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from feast.feature_view import DUMMY_ENTITY_ID, DUMMY_ENTITY_VAL
from feast.value_type import ValueType

from foundation.errors import InvalidEntityError
from online_store.reader import FeatureColumn, ReadPlan, ReadResult, ViewReadSpec
from service.catalog import ReadInfo
from service.redis_fast import FastRedis

# (view join key, request column) pairs, sorted; () reads every join key from its own column.
KeyMap = tuple[tuple[str, str], ...]


def key_map(join_key_map: Mapping[str, str], join_keys: Iterable[str]) -> KeyMap:
    """The part of a projection's ``join_key_map`` that renames one of the view's keys.

    Args:
        join_key_map: Feast's ``FeatureViewProjection.join_key_map`` (join key -> column).
        join_keys: the view's join keys.

    Returns:
        The renaming pairs, sorted: equal maps compare equal.
    """
    keys = set(join_keys)
    return tuple(sorted((k, c) for k, c in join_key_map.items() if k in keys and c != k))


def suffix(keys: KeyMap) -> str:
    """What tells the columns read through ``keys`` apart: ``""`` for the identity."""
    return "[" + ",".join(f"{k}={c}" for k, c in keys) + "]" if keys else ""


def read_key(view: str, feature: str, keys: KeyMap) -> str:
    """A feature's column key in the merged read result: ``view[map]:feature``."""
    return f"{view}{suffix(keys)}:{feature}"


@dataclass(frozen=True, slots=True)
class MappedRead:
    """The views read through one key map."""

    keys: KeyMap
    plan: ReadPlan
    # (view join key, request column) for every join key the plan reads, the identity
    # included; the entity-less views' `__dummy_id` is filled in, never asked for.
    columns: tuple[tuple[str, str], ...]

    def entities(self, entities: Mapping[str, Sequence[Any]], rows: int) -> dict[str, Any]:
        """The plan's entities: each join key's values, from its request column."""
        return {
            key: [DUMMY_ENTITY_VAL] * rows if key == DUMMY_ENTITY_ID else entities[column]
            for key, column in self.columns
        }

    async def read(
        self,
        client: aioredis.Redis | aioredis.RedisCluster | FastRedis,
        entities: Mapping[str, Sequence[Any]],
        rows: int,
    ) -> dict[str, FeatureColumn]:
        """Read the plan; columns keyed by :func:`read_key`.

        Raises:
            InvalidEntityError: a value of the wrong type, named by its request column.
        """
        try:
            result = await self.plan.read_async(client, self.entities(entities, rows))
        except InvalidEntityError as exc:
            column = dict(self.keys).get(exc.details.get("join_key", ""))
            if column is None:
                raise
            key = exc.details["join_key"]
            raise InvalidEntityError(
                f"entity column '{column}' (read as join key '{key}' through a feature "
                f"service's join key map): {exc.message}",
                join_key=column,
            ) from exc
        if not self.keys:
            return result.columns
        end = suffix(self.keys)
        # "view:feature" -> read_key's "view[map]:feature" (view names hold no ':')
        return {key.replace(":", end + ":", 1): col for key, col in result.columns.items()}


async def read_all(
    reads: Sequence[MappedRead],
    client: aioredis.Redis | aioredis.RedisCluster | FastRedis,
    entities: Mapping[str, Sequence[Any]],
    rows: int,
) -> ReadResult:
    """Every read of a plan, issued together, merged into one result.

    Args:
        reads: the plan's reads, the identity map's first.
        client: the Redis client.
        entities: the request's entity columns (checked).
        rows: the number of entity rows.

    Returns:
        One column per :func:`read_key`.

    Raises:
        InvalidEntityError: a value of the wrong type (the first read's error first).
        redis.exceptions.RedisError, OSError, TimeoutError: Redis failed.
    """
    if len(reads) == 1:
        return ReadResult(await reads[0].read(client, entities, rows))
    if not reads:
        return ReadResult({})
    done = await asyncio.gather(
        *(read.read(client, entities, rows) for read in reads), return_exceptions=True
    )
    merged: dict[str, FeatureColumn] = {}
    for outcome in done:
        if isinstance(outcome, BaseException):
            raise outcome
        merged.update(outcome)
    return ReadResult(merged)


@dataclass(frozen=True, slots=True)
class CompiledReads:
    """The reads of a feature set and what they need from a request."""

    reads: tuple[MappedRead, ...]
    columns: frozenset[str]  # the request columns the reads need (no `__dummy_id`)
    key_types: dict[str, ValueType]  # request column -> the type of the join key it feeds
    entityless: bool  # some view is entity-less (keyed by `__dummy_id`)


def compile_reads(
    project: str,
    views: Mapping[str, ReadInfo],
    read_features: Mapping[tuple[KeyMap, str], Sequence[str]],
) -> CompiledReads:
    """One read plan per key map.

    Args:
        project: the Feast project (the Redis key suffix).
        views: the views stored in Redis by name (batch, stream, written on-demand).
        read_features: (key map, view) -> the features to read, in order.

    Returns:
        The reads, the identity map's first.

    Raises:
        UnsupportedTypeError: a join key type cannot be encoded.
    """
    specs: dict[KeyMap, list[ViewReadSpec]] = {}
    columns: dict[KeyMap, dict[str, str]] = {}
    key_types: dict[str, ValueType] = {}
    for (keys, name), features in read_features.items():
        info = views[name]
        rename = dict(keys)
        used = columns.setdefault(keys, {})
        for key, value_type in zip(info.join_keys, info.join_key_types, strict=True):
            used[key] = rename.get(key, key)
            if key != DUMMY_ENTITY_ID:
                key_types[used[key]] = value_type
        specs.setdefault(keys, []).append(
            ViewReadSpec(
                name=name,
                join_keys=info.join_keys,
                join_key_types=info.join_key_types,
                features=tuple(features),
                ttl_micros=info.ttl_micros,
            )
        )
    reads = tuple(
        MappedRead(keys, ReadPlan.compile(project, specs[keys]), tuple(columns[keys].items()))
        for keys in sorted(specs, key=bool)  # the identity first, the rest as met
    )
    return CompiledReads(
        reads=reads,
        columns=frozenset(key_types),
        key_types=key_types,
        entityless=any(DUMMY_ENTITY_ID in used for used in columns.values()),
    )
