"""Push and write-to-online-store: validate every row first, then write.

A request is checked in full against the schema of every target view (column set,
types, join keys, timestamps) and turned into typed Arrow tables before anything is
written, so bad input never leaves a partial write behind. Online writes go through
``online_store.writer.write_arrow`` (Feast's never-older-over-newer rule); offline
writes through the repo's offline store (``offline_write_batch``). With
``online_and_offline`` the offline append runs first: it is the side more likely to
fail (files), and an online write that already happened cannot be undone.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import redis
from feast import FeatureStore
from feast.feature_view import DUMMY_ENTITY_ID, DUMMY_ENTITY_VAL
from feast.value_type import ValueType

from foundation.errors import (
    InvalidTimestampError,
    PushSourceNotFoundError,
    RequestTooLargeError,
    SchemaMismatchError,
)
from online_store.writer import write_arrow
from service.catalog import RegistrySnapshot, ViewInfo

_TS = pa.timestamp("us", tz="UTC")
_SCALARS: dict[ValueType, pa.DataType] = {
    ValueType.INT32: pa.int32(),
    ValueType.INT64: pa.int64(),
    ValueType.FLOAT: pa.float32(),
    ValueType.DOUBLE: pa.float64(),
    ValueType.BOOL: pa.bool_(),
    ValueType.STRING: pa.string(),
    ValueType.BYTES: pa.binary(),
    ValueType.UNIX_TIMESTAMP: _TS,
}
_LISTS = {
    ValueType.INT32_LIST: ValueType.INT32,
    ValueType.INT64_LIST: ValueType.INT64,
    ValueType.FLOAT_LIST: ValueType.FLOAT,
    ValueType.DOUBLE_LIST: ValueType.DOUBLE,
    ValueType.BOOL_LIST: ValueType.BOOL,
    ValueType.STRING_LIST: ValueType.STRING,
    ValueType.BYTES_LIST: ValueType.BYTES,
    ValueType.UNIX_TIMESTAMP_LIST: ValueType.UNIX_TIMESTAMP,
}
_INT_RANGE = {ValueType.INT32: 2**31, ValueType.INT64: 2**63}


class _Bad(Exception):
    """A value that does not fit; turned into a SchemaMismatchError naming the cell."""


def _check_scalar(vt: ValueType, v: Any) -> Any:
    if vt in _INT_RANGE:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Bad("an integer")
        if not -_INT_RANGE[vt] <= v < _INT_RANGE[vt]:
            raise _Bad(f"an integer in the {vt.name} range")
        return v
    if vt in (ValueType.FLOAT, ValueType.DOUBLE):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _Bad("a number")
        return float(v)
    if vt == ValueType.BOOL:
        if not isinstance(v, bool):
            raise _Bad("true or false")
        return v
    if vt == ValueType.STRING:
        if not isinstance(v, str):
            raise _Bad("a string")
        return v
    if vt == ValueType.BYTES:
        if not isinstance(v, str):
            raise _Bad("a base64 string")
        try:
            return base64.b64decode(v, validate=True)
        except binascii.Error:
            raise _Bad("a base64 string") from None
    if vt == ValueType.UNIX_TIMESTAMP:
        return _timestamp(v)[0]
    raise _Bad(f"a type this server can write (not {vt.name})")


def _timestamp(v: Any) -> tuple[datetime, bool]:
    """(aware UTC datetime, whether the input was naive)."""
    if isinstance(v, bool):
        raise _Bad("an RFC 3339 timestamp or epoch seconds")
    if isinstance(v, datetime):
        return (v.replace(tzinfo=UTC), True) if v.tzinfo is None else (v.astimezone(UTC), False)
    if isinstance(v, int | float):
        try:
            return datetime.fromtimestamp(v, tz=UTC), False
        except (ValueError, OverflowError, OSError):  # NaN, inf, beyond year 9999
            raise _Bad("epoch seconds within the datetime range") from None
    if isinstance(v, str):
        try:
            ts = datetime.fromisoformat(v)
        except ValueError:
            raise _Bad("an RFC 3339 timestamp like 2026-11-26T10:00:00Z") from None
        if ts.tzinfo is None:
            return ts.replace(tzinfo=UTC), True
        return ts.astimezone(UTC), False
    raise _Bad("an RFC 3339 timestamp or epoch seconds")


def _column(
    name: str, values: Sequence[Any], vt: ValueType, *, view: str, nullable: bool
) -> pa.Array:
    inner = _LISTS.get(vt)
    check: Callable[[Any], Any]
    if inner is not None:

        def check(v: Any) -> Any:
            if not isinstance(v, list):
                raise _Bad(f"a list of {inner.name}")
            return [None if x is None else _check_scalar(inner, x) for x in v]

        arrow_type = pa.list_(_SCALARS[inner])
    else:

        def check(v: Any) -> Any:
            return _check_scalar(vt, v)

        arrow_type = _SCALARS.get(vt, pa.null())
    out: list[Any] = []
    for row, v in enumerate(values):
        if v is None:
            if not nullable:
                raise SchemaMismatchError(
                    f"column {name!r} of feature view {view!r} is null at row {row}; join keys "
                    "and event timestamps must be set on every row",
                    column=name,
                    row=row,
                )
            out.append(None)
            continue
        try:
            out.append(check(v))
        except _Bad as exc:
            raise SchemaMismatchError(
                f"column {name!r} of feature view {view!r} expects {exc} ({vt.name}), got "
                f"{v!r} at row {row}; fix the value or the view schema",
                column=name,
                row=row,
                expected=vt.name,
            ) from None
    return pa.array(out, type=arrow_type)


def _timestamp_column(name: str, values: Sequence[Any], *, view: str, nullable: bool) -> pa.Array:
    out: list[datetime | None] = []
    kinds: set[bool] = set()
    for row, v in enumerate(values):
        if v is None:
            if not nullable:
                raise InvalidTimestampError(
                    f"column {name!r} of feature view {view!r} is null at row {row}; every row "
                    "needs an event timestamp",
                    column=name,
                    row=row,
                )
            out.append(None)
            continue
        try:
            ts, naive = _timestamp(v)
        except _Bad as exc:
            raise InvalidTimestampError(
                f"column {name!r} row {row}: expected {exc}, got {v!r}", column=name, row=row
            ) from None
        if isinstance(v, str):
            kinds.add(naive)
        out.append(ts)
    if len(kinds) > 1:
        raise InvalidTimestampError(
            f"column {name!r} mixes timestamps with and without a UTC offset; naive times "
            "are read as UTC, so give every value an offset (e.g. ...Z) or none",
            column=name,
        )
    return pa.array(out, type=_TS)


def build_table(info: ViewInfo, df: Mapping[str, Sequence[Any]]) -> pa.Table:
    """The typed Arrow table for one view, or a 422 naming the first bad cell.

    Args:
        info: the target view.
        df: column name -> values (Feast's ``df`` JSON).

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
        arrays[key] = _column(key, df[key], vt, view=view.name, nullable=False)
    for name, feature in info.features.items():
        arrays[name] = _column(name, df[name], feature.value_type, view=view.name, nullable=True)
    arrays[ts_field] = _timestamp_column(ts_field, df[ts_field], view=view.name, nullable=False)
    if created_field:
        n = len(df[ts_field])
        created = df.get(created_field)
        # Offline sources keep the created column; a push without it gets "now".
        created_values = created if created is not None else [datetime.now(UTC)] * n
        arrays[created_field] = _timestamp_column(
            created_field, created_values, view=view.name, nullable=True
        )
    return pa.table(arrays)


def check_shape(df: Mapping[str, Sequence[Any]], *, max_rows: int) -> int:
    """Same length for every column, at least one row, at most ``max_rows``.

    Raises:
        SchemaMismatchError: ragged or empty ``df``.
        RequestTooLargeError: too many rows.
    """
    lengths = {name: len(values) for name, values in df.items()}
    if not lengths or len(set(lengths.values())) != 1:
        raise SchemaMismatchError(
            f"df must be a non-empty object of equally long columns, got lengths {lengths}",
            lengths=lengths,
        )
    n = next(iter(lengths.values()))
    if n == 0:
        raise SchemaMismatchError("df has no rows; send at least one row")
    if n > max_rows:
        raise RequestTooLargeError(
            f"{n} rows in one write; the limit is {max_rows} (FEATURESTORE_MAX_PUSH_ROWS); "
            "split it",
            limit=max_rows,
        )
    return n


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


def check_unknown_columns(df: Mapping[str, Any], views: Sequence[ViewInfo]) -> None:
    """Refuse columns that no target view takes (a typo must not be dropped silently).

    Raises:
        SchemaMismatchError: names the unknown columns.
    """
    known: set[str] = set()
    for info in views:
        source = info.view.batch_source
        known.update(info.join_keys, info.features)
        if source is not None:
            known.add(source.timestamp_field)
            if source.created_timestamp_column:
                known.add(source.created_timestamp_column)
    unknown = sorted(set(df) - known)
    if unknown:
        raise SchemaMismatchError(
            f"df has columns {unknown} that no target feature view "
            f"({[v.name for v in views]}) takes; remove or rename them",
            unknown=unknown,
        )


def write_tables(
    store: FeatureStore,
    client: redis.Redis,
    tables: Sequence[tuple[ViewInfo, pa.Table]],
    *,
    online: bool,
    offline: bool,
) -> None:
    """Write validated tables (blocking; run in a worker thread).

    Args:
        store: the Feast store (offline store and online store config).
        client: synchronous Redis client.
        tables: (view, table) pairs from :func:`build_table`.
        online: write to Redis.
        offline: append to the offline store.
    """
    if offline:
        provider = store._get_provider()
        for info, table in tables:
            # the placeholder key of an entity-less view is not a source column
            if DUMMY_ENTITY_ID in table.column_names:
                table = table.drop_columns([DUMMY_ENTITY_ID])
            provider.ingest_df_to_offline_store(info.view, table)
    if online:
        key_ttl = getattr(store.config.online_store, "key_ttl_seconds", None)
        for info, table in tables:
            write_arrow(client, info.view, table, project=store.project, key_ttl_seconds=key_ttl)


def validate_and_write(
    store: FeatureStore,
    client: redis.Redis,
    views: Sequence[ViewInfo],
    df: Mapping[str, Sequence[Any]],
    *,
    online: bool,
    offline: bool,
) -> list[tuple[ViewInfo, pa.Table]]:
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

    Returns:
        The (view, table) pairs written.

    Raises:
        SchemaMismatchError, InvalidTimestampError: bad input; nothing was written.
    """
    check_unknown_columns(df, views)
    tables = [(info, build_table(info, df)) for info in views]
    write_tables(store, client, tables, online=online, offline=offline)
    return tables
