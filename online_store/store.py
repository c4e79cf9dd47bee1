"""The Feast ``OnlineStore`` plugin: ``type: online_store.store.FastRedisOnlineStore``.

Same configuration keys as Feast's ``RedisOnlineStoreConfig`` and the same byte layout
(``docs/online-format.md``), so an existing Feast repo switches by changing ``type:``.
Writes go through :mod:`online_store.writer`, reads through :mod:`online_store.reader`.
Unsupported feature or entity types are refused in :meth:`update`, which ``feast apply``
calls before it commits the registry.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

import numpy as np
import redis
from feast import Entity, FeatureView, RepoConfig
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.online_store import OnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import FeastConfigBaseModel
from feast.utils import make_tzaware
from feast.value_type import ValueType
from pydantic import StrictStr, field_validator
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from foundation.errors import BackendUnavailableError, UnsupportedTypeError
from online_store.atomic_write import write_rows_atomic
from online_store.codec import (
    check_entity_type,
    check_feature_type,
    encode_timestamps,
    field_name,
    ts_field,
)
from online_store.connection import make_client, parse_connection_string, resolve_target
from online_store.decode import EPOCH, timestamp_datetime
from online_store.keys import entity_key_prefix, glob_escape
from online_store.reader import ReadPlan, ViewReadSpec

logger = logging.getLogger(__name__)

Client = redis.Redis | RedisCluster


class RedisType(StrEnum):
    redis = "redis"
    redis_cluster = "redis_cluster"
    redis_sentinel = "redis_sentinel"


_UNEXPANDED = re.compile(r"\$\{(\w+)\}")


class FastRedisOnlineStoreConfig(FeastConfigBaseModel):
    """Config keys of Feast's Redis store; ``connection_string`` may also be a URL."""

    type: Literal["online_store.store.FastRedisOnlineStore"] = (
        "online_store.store.FastRedisOnlineStore"
    )
    redis_type: RedisType = RedisType.redis
    client: Literal["redis", "glide"] = "redis"
    sentinel_master: StrictStr = "mymaster"
    connection_string: StrictStr | None = None
    key_ttl_seconds: int | None = None
    full_scan_for_deletion: bool | None = True
    skip_dedup: bool = False
    socket_timeout_seconds: float = 30.0
    """Bound on every Redis call (connect, send, reply); a hung server fails the run."""
    expect_env: list[StrictStr] = []
    """Values written as ``${VAR}`` that must have been expanded when the repo loads (Feast
    leaves a variable that is not set as written). One still unexpanded fails the load with
    a message naming the variable, instead of a later opaque error where it is used (the
    example repo lists ``${FEATURESTORE_REGISTRY_URL}``, which its registry path reads)."""

    @field_validator("expect_env")
    @classmethod
    def _variables_are_set(cls, values: list[str]) -> list[str]:
        unset = sorted({m for v in values for m in _UNEXPANDED.findall(v)})
        if unset:
            names = ", ".join(unset)
            raise ValueError(
                f"environment variable {names} is not set, and feature_store.yaml reads it; "
                'export it, or run `eval "$(featurestore env --repo <this repo>)"` for the '
                "defaults, or open the repo with foundation.environment.open_repo or the "
                "featurestore commands, which apply them"
            )
        return values


def _proto_scalar(v: ValueProto) -> tuple[object, ValueType]:
    kind = v.WhichOneof("val")
    mapping = {
        "int64_val": ValueType.INT64,
        "int32_val": ValueType.INT32,
        "string_val": ValueType.STRING,
        "bytes_val": ValueType.BYTES,
    }
    if kind not in mapping:
        raise ValueError(f"entity value kind {kind} is not supported")
    return getattr(v, kind), mapping[kind]


def _unregister(config: RepoConfig, view: str) -> None:
    """Drop a view we refuse from the registry.

    ``FeatureStore.apply`` writes views to the registry before it asks the online store to
    update, so without this a refused view would stay registered and fail at materialize.
    """
    from feast import FeatureStore

    try:
        FeatureStore(config=config).registry.delete_feature_view(view, config.project)
    except Exception:  # best effort: the apply fails with the real error either way
        logger.warning("could not remove refused feature view %s from the registry", view)


class FastRedisOnlineStore(OnlineStore):
    """Redis online store with Feast's layout, vectorized writes and one-round-trip reads."""

    def __init__(self) -> None:
        self._client: Client | None = None
        self._plans: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], ReadPlan] = {}

    # -- connections -------------------------------------------------------------------
    def client(self, config: RepoConfig) -> Client:
        """The (cached) synchronous client for this repo's Redis.

        Raises:
            BackendUnavailableError: Redis cannot be reached.
        """
        if self._client is None:
            store_config: FastRedisOnlineStoreConfig = config.online_store
            target = resolve_target(store_config.connection_string, config.repo_path)
            if store_config.redis_type == RedisType.redis_sentinel:
                nodes, params = parse_connection_string(target)
                sentinel = Sentinel([(n["host"], n["port"]) for n in nodes], **params)
                self._client = sentinel.master_for(store_config.sentinel_master)
            else:
                cluster = store_config.redis_type == RedisType.redis_cluster
                self._client = make_client(
                    target, cluster=cluster, timeout=store_config.socket_timeout_seconds
                )
            try:
                self._client.ping()
            except redis.RedisError as exc:
                self._client = None
                raise BackendUnavailableError(
                    f"cannot reach the Redis online store ({type(exc).__name__}); check "
                    "online_store.connection_string or FEATURESTORE_REDIS_URL"
                ) from None
        return self._client

    # -- writes ------------------------------------------------------------------------
    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Feast's protobuf-row write path (SDK push), through the Arrow writers' atomic
        compare-and-set: per key the newest row (the later one on a tie) is written where it
        is newer than the stored one."""
        client = self.client(config)
        store_config: FastRedisOnlineStoreConfig = config.online_store
        project = config.project.encode()
        latest: dict[bytes, tuple[int, int]] = {}
        for i, (entity_key, _, timestamp, _) in enumerate(data):
            key = serialize_entity_key(entity_key, entity_key_serialization_version=3) + project
            # Integer arithmetic: float timestamps round wrongly before 1970.
            micros = (make_tzaware(timestamp) - EPOCH) // timedelta(microseconds=1)
            if key not in latest or micros >= latest[key][0]:
                latest[key] = (micros, i)
        # One compare-and-set batch per set of features (Feast sends every feature per row).
        groups: dict[tuple[str, ...], list[bytes]] = {}
        for key, (_, i) in latest.items():
            groups.setdefault(tuple(data[i][1]), []).append(key)
        for names, keys in groups.items():
            micros_of = np.array([latest[k][0] for k in keys], dtype=np.int64)
            rows = [data[latest[k][1]][1] for k in keys]
            write_rows_atomic(
                client,
                keys,
                micros_of,
                encode_timestamps(micros_of),
                [[row[name].SerializeToString() for row in rows] for name in names],
                key_ttl_seconds=store_config.key_ttl_seconds,
                fields=[field_name(table.name, name) for name in names],
                ts_name=ts_field(table.name),
            )
        if progress:
            progress(len(data))

    # -- reads -------------------------------------------------------------------------
    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        """Feast's read hook, served by :class:`ReadPlan` (missing entity -> ``(None, None)``).

        Feature view TTL is not applied here: Feast's contract for this hook is "what is
        stored"; our HTTP service applies TTL through the reader's statuses.
        """
        if not entity_keys:
            return []
        features = tuple(requested_features or [f.name for f in table.features])
        join_keys = tuple(entity_keys[0].join_keys)
        columns: list[list[object]] = [[] for _ in join_keys]
        types: list[ValueType] = []
        for ek in entity_keys:
            for j, v in enumerate(ek.entity_values):
                value, vt = _proto_scalar(v)
                columns[j].append(value)
                if len(types) <= j:
                    types.append(vt)
        cache_key = (config.project, table.name, join_keys, features)
        plan = self._plans.get(cache_key)
        if plan is None:
            spec = ViewReadSpec(table.name, join_keys, tuple(types), features, 0)
            plan = self._plans[cache_key] = ReadPlan.compile(config.project, [spec])
        raw = plan.read_raw(self.client(config), dict(zip(join_keys, columns, strict=True)))[0]
        slot = plan.groups[0].views[0]
        decoded: list[tuple[datetime | None, dict[str, ValueProto] | None]] = []
        for reply in raw.replies:
            ts_raw = reply[slot.ts_index]
            if not ts_raw:
                decoded.append((None, None))
                continue
            values = {
                name: ValueProto.FromString(reply[idx] or b"")
                for name, idx in zip(features, slot.feature_indexes, strict=True)
            }
            decoded.append((timestamp_datetime(ts_raw), values))
        return [decoded[u] for u in raw.row_to_unique]

    # -- lifecycle ---------------------------------------------------------------------
    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        """Validate kept views' types, then delete removed views' data like Feast does.

        Raises:
            UnsupportedTypeError: a kept view has a feature or join key type we cannot store.
        """
        for table in tables_to_keep:
            if not hasattr(table, "entity_columns"):
                continue  # on-demand views are not stored unless written explicitly
            try:
                for column in table.entity_columns:
                    check_entity_type(table.name, column.name, column.dtype.to_value_type())
                for feature in table.features:
                    check_feature_type(table.name, feature.name, feature.dtype.to_value_type())
            except UnsupportedTypeError:
                _unregister(config, table.name)
                raise
        store_config: FastRedisOnlineStoreConfig = config.online_store
        if store_config.full_scan_for_deletion:
            for table in tables_to_delete:
                if hasattr(table, "join_keys"):
                    self.delete_table(config, table)

    def teardown(
        self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]
    ) -> None:
        """Delete every key of the torn-down views' join key sets (Feast's teardown)."""
        for join_keys in {tuple(t.join_keys) for t in tables if hasattr(t, "join_keys")}:
            self.delete_entity_values(config, list(join_keys))

    def _scan(self, config: RepoConfig, join_keys: Sequence[str]) -> list[bytes]:
        pattern = (
            glob_escape(entity_key_prefix(join_keys)) + b"*" + glob_escape(config.project.encode())
        )
        return list(self.client(config).scan_iter(match=pattern, count=10_000))

    def delete_entity_values(self, config: RepoConfig, join_keys: list[str]) -> int:
        """Delete all keys for a join key set in this project.

        Returns:
            Number of keys deleted.
        """
        keys = self._scan(config, join_keys)
        client = self.client(config)
        for start in range(0, len(keys), 10_000):
            with client.pipeline(transaction=False) as pipe:
                for key in keys[start : start + 10_000]:
                    pipe.delete(key)
                pipe.execute()
        return len(keys)

    def delete_table(self, config: RepoConfig, table: FeatureView) -> int:
        """Remove one view's fields from every hash; delete hashes left with no view.

        Returns:
            Number of hashes touched.
        """
        client = self.client(config)
        view_ts = table.name.encode()
        fields = [field_name(table.name, f.name) for f in table.features]
        fields.append(ts_field(table.name))
        keys = self._scan(config, table.join_keys)
        touched = 0
        for start in range(0, len(keys), 10_000):
            chunk = keys[start : start + 10_000]
            with client.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.hkeys(key)  # type: ignore[arg-type]  # redis-py accepts bytes keys
                all_fields = pipe.execute()
            with client.pipeline(transaction=False) as pipe:
                for key, names in zip(chunk, all_fields, strict=True):
                    views = {n[4:] for n in names if n.startswith(b"_ts:")}
                    if view_ts not in views:
                        continue
                    if len(views) == 1:
                        pipe.delete(key)
                    else:
                        pipe.hdel(key, *fields)  # type: ignore[arg-type]  # redis-py accepts bytes keys
                    touched += 1
                pipe.execute()
        logger.debug("deleted %d rows of feature view %s", touched, table.name)
        return touched
