"""Deleting one feature view's rows from the online store (the repair for a pinned key).

A stored row is replaced only by a strictly newer one, so a row stamped in the future
(written before the clock rule, or by a batch job fed bad data) pins its value until
that time. Deleting the view's fields from the entity's hash lets the next write land.
Other views sharing the hash keep their fields; Redis drops a hash left empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis
from feast.value_type import ValueType

from online_store.codec import field_name, ts_field
from online_store.keys import entity_key_prefix, glob_escape
from online_store.reader import ReadPlan, ViewReadSpec

_SCAN_COUNT = 10_000


def _view_fields(view: str, features: Sequence[str]) -> list[bytes]:
    return [*(field_name(view, f) for f in features), ts_field(view)]


def _hdel(client: redis.Redis | redis.RedisCluster, keys: list[bytes], fields: list[bytes]) -> int:
    """HDEL the fields from every key; the number of keys that held the view."""
    ts = fields[-1]
    deleted = 0
    for start in range(0, len(keys), _SCAN_COUNT):
        chunk = keys[start : start + _SCAN_COUNT]
        with client.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.hexists(key, ts)  # type: ignore[arg-type]  # redis-py accepts bytes keys
                pipe.hdel(key, *fields)  # type: ignore[arg-type]
            replies = pipe.execute()
        deleted += sum(1 for held in replies[0::2] if held)
    return deleted


def delete_entities(
    client: redis.Redis | redis.RedisCluster,
    *,
    project: str,
    view: str,
    join_keys: Sequence[str],
    join_key_types: Sequence[ValueType],
    features: Sequence[str],
    entities: Mapping[str, Sequence[object]],
) -> int:
    """Delete a view's rows for the given entities.

    Args:
        client: redis-py client, ``decode_responses=False``.
        project: Feast project (key suffix).
        view: the feature view.
        join_keys: the view's join keys.
        join_key_types: their value types.
        features: every feature of the view.
        entities: join key -> values, one per entity row (as in a lookup).

    Returns:
        How many of the entities had a row of the view.

    Raises:
        InvalidEntityError: a join key missing or mistyped, or ragged lists.
    """
    spec = ViewReadSpec(view, tuple(join_keys), tuple(join_key_types), tuple(features), 0)
    keys = ReadPlan.compile(project, [spec]).entity_keys(entities)
    return _hdel(client, keys, _view_fields(view, features))


def delete_all(
    client: redis.Redis | redis.RedisCluster,
    *,
    project: str,
    view: str,
    join_keys: Sequence[str],
    features: Sequence[str],
) -> int:
    """Delete every row of a view (a scan over the hashes of its join keys).

    Args:
        client: redis-py client, ``decode_responses=False``.
        project: Feast project.
        view: the feature view.
        join_keys: the view's join keys.
        features: every feature of the view.

    Returns:
        How many hashes held a row of the view.
    """
    pattern = glob_escape(entity_key_prefix(join_keys)) + b"*" + glob_escape(project.encode())
    keys = list(client.scan_iter(match=pattern, count=_SCAN_COUNT))
    return _hdel(client, keys, _view_fields(view, features))
