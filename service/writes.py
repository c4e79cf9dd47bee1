"""Push and write-to-online-store: validate every row first, then write.

A request is checked in full against the schema of every target view (column set,
types, join keys, timestamps) and turned into typed Arrow tables before anything is
written, so bad input never leaves a partial write behind (the value rules are in
:mod:`service.write_values`, including the clock rule: event times too far ahead of
the server clock are refused). Online writes go through
``online_store.writer.write_arrow`` (Feast's never-older-over-newer rule); offline
appends, once per offline source and all sources or none, through
:mod:`service.offline_writes`. With ``online_and_offline`` the offline files are staged
first, then the rows written online, then the files renamed into place: see
:func:`write_tables` for why and what a failure leaves behind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import redis
from feast import FeatureStore, FileSource
from feast.feature_view import DUMMY_ENTITY_ID, DUMMY_ENTITY_VAL

from foundation.errors import (
    BackendUnavailableError,
    PushSourceNotFoundError,
    SchemaMismatchError,
)
from offline_store.partitions import declared_types
from offline_store.parts import conform
from offline_store.sources import resolve_path
from offline_store.writes import source_schema
from online_store.write_plan import WriteStats
from online_store.writer import write_arrow
from service.catalog import RegistrySnapshot, ViewInfo
from service.offline_writes import OfflineAppend, OfflineBatch, batches_by_source
from service.write_values import column, timestamp_column


def build_table(
    info: ViewInfo,
    df: Mapping[str, Sequence[Any]],
    *,
    max_future_skew: timedelta | None = None,
    now: datetime | None = None,
) -> pa.Table:
    """The typed Arrow table for one view, or a 422 naming the first bad cell.

    Args:
        info: the target view.
        df: column name -> values (Feast's ``df`` JSON).
        max_future_skew: refuse event and created times further than this ahead of
            ``now`` (None: no limit).
        now: the server clock (default: the current UTC time).

    Returns:
        Columns: join keys (Feast's ``__dummy_id`` placeholder, filled in, for an
        entity-less view), features, the event timestamp and (when the source has one)
        the created timestamp.

    Raises:
        SchemaMismatchError: missing columns, wrong types, null join keys.
        InvalidTimestampError: bad or mixed timestamps.
    """
    view = info.view
    source = view.batch_source
    ts_field = source.timestamp_field if source is not None else "event_timestamp"
    created_field = (source.created_timestamp_column or None) if source is not None else None
    # An entity-less view's rows live under Feast's placeholder key, which the
    # writer fills in: clients send only the timestamp and the features.
    keys = [k for k in info.join_keys if k != DUMMY_ENTITY_ID]
    required = [*keys, ts_field, *info.features]
    missing = [c for c in required if c not in df]
    if missing:
        raise SchemaMismatchError(
            f"feature view {view.name!r} needs columns {missing} in df; it takes join keys "
            f"{keys}, timestamp {ts_field!r} and features {list(info.features)}",
            feature_view=view.name,
            missing=missing,
        )
    arrays: dict[str, pa.Array] = {}
    for key, vt in zip(info.join_keys, info.join_key_types, strict=True):
        if key == DUMMY_ENTITY_ID:
            given = df.get(key)
            if given is not None and any(v != DUMMY_ENTITY_VAL for v in given):
                raise SchemaMismatchError(
                    f"feature view {view.name!r} is entity-less: its rows are keyed by "
                    f'{DUMMY_ENTITY_ID}="" only; drop the {DUMMY_ENTITY_ID} column from df',
                    feature_view=view.name,
                )
            arrays[key] = pa.array([DUMMY_ENTITY_VAL] * len(df[ts_field]), pa.string())
            continue
        arrays[key] = column(key, df[key], vt, view=view.name, nullable=False, join_key=True)
    for name, feature in info.features.items():
        arrays[name] = column(name, df[name], feature.value_type, view=view.name, nullable=True)
    latest = None
    if max_future_skew is not None:
        latest = (now or datetime.now(UTC)) + max_future_skew
    arrays[ts_field] = timestamp_column(
        ts_field, df[ts_field], view=view.name, nullable=False, latest=latest, skew=max_future_skew
    )
    if created_field:
        n = len(df[ts_field])
        created = df.get(created_field)
        # Offline sources keep the created column; a push without it gets "now".
        created_values = created if created is not None else [datetime.now(UTC)] * n
        arrays[created_field] = timestamp_column(
            created_field,
            created_values,
            view=view.name,
            nullable=True,
            latest=latest,
            skew=max_future_skew,
        )
    return pa.table(arrays)


def push_views(snapshot: RegistrySnapshot, push_source: str) -> list[ViewInfo]:
    """The views fed by a push source.

    Raises:
        PushSourceNotFoundError: unknown push source.
    """
    if push_source not in snapshot.push_sources:
        raise PushSourceNotFoundError(
            f"push source {push_source!r} not in project {snapshot.project!r}; known push "
            f"sources: {sorted(snapshot.push_sources)}",
            push_source_name=push_source,
        )
    return [snapshot.views[name] for name in snapshot.push_sources[push_source]]


def check_unknown_columns(
    df: Mapping[str, Any], views: Sequence[ViewInfo], *, also: frozenset[str] = frozenset()
) -> None:
    """Refuse columns that no target view takes (a typo must not be dropped silently).

    Args:
        df: the request's columns.
        views: the target views.
        also: other accepted names (the offline sources' columns, for offline pushes).

    Raises:
        SchemaMismatchError: names the unknown columns.
    """
    known = _view_columns(views) | also
    unknown = sorted(set(df) - known)
    if unknown:
        raise SchemaMismatchError(
            f"df has columns {unknown} that no target feature view "
            f"({[v.name for v in views]}) takes; remove or rename them",
            unknown=unknown,
        )


def _view_columns(views: Sequence[ViewInfo]) -> frozenset[str]:
    known: set[str] = set()
    for info in views:
        source = info.view.batch_source
        known.update(info.join_keys, info.features)
        if source is not None:
            known.add(source.timestamp_field)
            if source.created_timestamp_column:
                known.add(source.created_timestamp_column)
    return frozenset(known)


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What a validated write did, per view.

    Attributes:
        tables: the (view, table) pairs that were validated and written.
        online: per view, the online store's counts (empty when not written online).
        offline_rows: rows appended to the offline store, summed over its sources (views
            sharing a source share its rows).
    """

    tables: list[tuple[ViewInfo, pa.Table]]
    online: dict[str, WriteStats]
    offline_rows: int


def offline_schema(store: FeatureStore, info: ViewInfo) -> pa.Schema | None:
    """The schema of a view's Parquet source (None: not a FileSource, or no file yet)."""
    source = info.view.batch_source
    if not isinstance(source, FileSource):
        return None
    path = resolve_path(store.config.repo_path, source.path)
    return source_schema(path, partition_types=declared_types(info.view))


def with_source_columns(
    table: pa.Table, schema: pa.Schema | None, df: Mapping[str, Sequence[Any]], *, view: str
) -> pa.Table:
    """A view's table widened to its offline source's columns, cast to the source types.

    Columns of the source that the view does not use are taken from ``df`` when the
    caller sent them, else written as nulls (stock Feast refuses such a push with a 500).

    Raises:
        SchemaMismatchError: a sent column that does not fit the source's type.
    """
    if schema is None:
        return table
    where = f"the offline source of feature view {view!r}"
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    for field in schema:
        if field.name in table.column_names:
            columns[field.name] = table[field.name]
        elif field.name in df:
            try:
                columns[field.name] = pa.array(list(df[field.name])).cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                raise SchemaMismatchError(
                    f"column {field.name!r} does not fit {where}, which stores it as "
                    f"{field.type}: {exc}; send {field.type} values or leave the column out "
                    "(it is then written as null)",
                    column=field.name,
                ) from exc
        else:
            columns[field.name] = pa.nulls(table.num_rows, field.type)
    for name in table.column_names:
        columns.setdefault(name, table[name])  # conform names what does not belong
    return conform(pa.table(columns), schema, where)


def write_tables(
    store: FeatureStore,
    client: redis.Redis,
    tables: Sequence[tuple[ViewInfo, pa.Table]],
    *,
    online: bool,
    offline: bool,
    offline_batches: Sequence[OfflineBatch] | None = None,
) -> WriteOutcome:
    """Write validated tables (blocking; run in a worker thread).

    Order: the offline store is checked to take the push and every offline source's file
    is staged (written and fsynced where no reader sees it: :mod:`service.offline_writes`),
    then every view is written online, then the staged files are all renamed into place.
    What a failed request leaves behind:

    - staging fails on I/O (disk full, permissions, a lost mount):
      ``BackendUnavailableError`` (503, ``backend: offline_store``) and nothing is
      written, online or offline.
    - Redis fails (unreachable, timeout, failover, maxmemory; on a cluster, any node
      holding the rows' slots): ``BackendUnavailableError`` (503, ``backend: redis``) and
      the staged files are removed: nothing is appended offline. Any subset of the rows
      may already be stored online (the write is many compare-and-set calls, none rolled
      back), each row whole and never over a newer one.
    - the final renames fail (rare: they write no data): 503 with ``backend:
      offline_store``; every row is online, and no source keeps any of the push (files
      already renamed are removed again).
    - In each case retrying the same request converges to the state of one successful
      request: rows already online have an equal event time and are skipped (the answer
      counts them in ``skipped_older``), each offline source gets the rows once.

    Why online before the renames: a renamed file cannot be taken back once readers may
    have seen it, and appending is not idempotent (a retry after a kept append stores the
    rows twice); an online write converges when repeated. With an offline store other
    than ours (no staging step), the sources are appended in turn after the online write,
    and a failure keeps the sources appended before it.

    Args:
        store: the Feast store (offline store and online store config).
        client: synchronous Redis client.
        tables: (view, table) pairs from :func:`build_table`.
        online: write to Redis.
        offline: append to the offline store.
        offline_batches: what to append offline, one batch per source (default: the
            tables themselves, one per source), e.g. with the sources' other columns.

    Returns:
        Rows written and skipped per view.

    Raises:
        InvalidRequestError: the offline store cannot take pushes (nothing written).
        BackendUnavailableError: the offline store or Redis failed, as above.
    """
    append = None
    if offline:
        if offline_batches is None:
            offline_batches = batches_by_source(store, tables)
        append = OfflineAppend(store, offline_batches)
        append.stage(online=online)
    stats: dict[str, WriteStats] = {}
    if online:
        try:
            stats = _write_online(store, client, tables, offline=offline)
        except BaseException:
            if append is not None:
                append.discard()
            raise
    offline_rows = append.commit(online=online) if append is not None else 0
    return WriteOutcome(list(tables), stats, offline_rows)


def _write_online(
    store: FeatureStore,
    client: redis.Redis,
    tables: Sequence[tuple[ViewInfo, pa.Table]],
    *,
    offline: bool,
) -> dict[str, WriteStats]:
    key_ttl = getattr(store.config.online_store, "key_ttl_seconds", None)
    stats: dict[str, WriteStats] = {}
    for info, table in tables:
        try:
            stats[info.name] = write_arrow(
                client, info.view, table, project=store.project, key_ttl_seconds=key_ttl
            )
        except BackendUnavailableError as exc:
            if not offline:
                raise
            raise BackendUnavailableError(
                f"{exc.message}; nothing was appended to the offline store", **exc.details
            ) from exc
    return stats


def validate_and_write(
    store: FeatureStore,
    client: redis.Redis,
    views: Sequence[ViewInfo],
    df: Mapping[str, Sequence[Any]],
    *,
    online: bool,
    offline: bool,
    max_future_skew: timedelta | None = None,
) -> WriteOutcome:
    """Validate ``df`` against every view, then write (blocking: run in a worker thread).

    Validation is per cell in Python, up to ``max_push_rows`` rows, so it stays off the
    event loop with the write.

    Args:
        store: the Feast store.
        client: synchronous Redis client.
        views: the target views.
        df: the request's columns.
        online: write to Redis.
        offline: append to the offline store.
        max_future_skew: refuse event times further ahead of the server clock.

    Returns:
        What was written and skipped.

    Raises:
        SchemaMismatchError, InvalidTimestampError: bad input; nothing was written.
    """
    # The sources' other columns are accepted (as stock Feast does); their schemas are
    # read only when the rows go offline or carry a column the views do not use.
    with_sources = offline or not _view_columns(views).issuperset(df)
    schemas = [offline_schema(store, info) if with_sources else None for info in views]
    source_columns = frozenset(n for schema in schemas if schema is not None for n in schema.names)
    check_unknown_columns(df, views, also=source_columns)
    now = datetime.now(UTC)
    tables = [
        (info, build_table(info, df, max_future_skew=max_future_skew, now=now)) for info in views
    ]
    batches = None
    if offline:
        schema_of = {info.name: schema for info, schema in zip(views, schemas, strict=True)}

        def widen(info: ViewInfo, table: pa.Table) -> pa.Table:
            return with_source_columns(table, schema_of[info.name], df, view=info.name)

        batches = batches_by_source(store, tables, widen=widen)
    return write_tables(
        store, client, tables, online=online, offline=offline, offline_batches=batches
    )
