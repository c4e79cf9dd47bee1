"""Queries for materialization pulls: latest row per entity, or every row, in a time window.

Both take Feast's raw source column names (any field mapping has already been reversed by the
caller, as Feast's interface requires) and return the same columns as Feast's file store: the
join keys, the features, the event timestamp and the created timestamp (``__dummy_id`` for
entity-less views). Timestamps come back as UTC TIMESTAMPTZ.

The window is ``[start, end)``. The bounds are compared against the raw column with a literal
of the column's own type, so DuckDB pushes the filter into the Parquet scan and skips row groups
outside the window.

A pull is a :class:`~offline_store.job.Query`: statements to run first (the latest-per-entity
pull stores its winners, one small row per entity, in a temp table), the streaming ``SELECT``,
and a cheap count of the rows it will return, which the materialization progress uses for
its ETA.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
from feast.feature_view import DUMMY_ENTITY_ID, DUMMY_ENTITY_VAL

from foundation.errors import InvalidRequestError
from offline_store.job import Query
from offline_store.sources import (
    FILE_ORDER,
    describe,
    quote_ident,
    quote_literal,
    timestamp_literal,
)

# Timestamp types without a time zone (pandas writes naive ``datetime64[ns]`` columns as
# TIMESTAMP_NS): DuckDB compares them with a naive literal, exactly, but not with a TIMESTAMPTZ.
_NAIVE_TIMESTAMPS = frozenset({"TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S"})


def _bound_literal(value: datetime, column_type: str) -> str:
    """A literal comparable with the raw column without casting the column."""
    if column_type.upper() in _NAIVE_TIMESTAMPS:
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return f"TIMESTAMP '{value.isoformat(sep=' ', timespec='microseconds')}'"
    return timestamp_literal(value)


def _window(ts: str, column_type: str, start: datetime | None, end: datetime | None) -> list[str]:
    where = [f"{ts} IS NOT NULL"]
    if start is not None:
        where.append(f"{ts} >= {_bound_literal(start, column_type)}")
    if end is not None:
        where.append(f"{ts} < {_bound_literal(end, column_type)}")
    return where


def _check_columns(types: dict[str, str], wanted: list[str], scan_sql: str) -> None:
    missing = [c for c in wanted if c not in types]
    if missing:
        raise InvalidRequestError(
            f"columns {missing} are not in the offline source {scan_sql} (it has "
            f"{sorted(types)}); fix the feature view schema or the source's field_mapping",
            missing=missing,
        )


def build_pull_query(
    con: duckdb.DuckDBPyConnection,
    scan_sql: str,
    *,
    join_key_columns: list[str],
    feature_name_columns: list[str],
    timestamp_field: str,
    created_timestamp_column: str | None,
    start_date: datetime | None,
    end_date: datetime | None,
    latest_only: bool,
    single_file: bool = False,
) -> Query:
    """SQL for ``pull_latest_from_table_or_query`` / ``pull_all_from_table_or_query``.

    Args:
        con: connection used to read the source schema.
        scan_sql: ``read_parquet`` expression including ``filename``/``file_row_number``.
        join_key_columns: raw join key columns.
        feature_name_columns: raw feature columns.
        timestamp_field: raw event timestamp column.
        created_timestamp_column: raw created timestamp column, if any.
        start_date: inclusive lower bound (``None``: unbounded).
        end_date: exclusive upper bound (``None``: unbounded).
        latest_only: keep one row per join key: greatest (event_ts, created_ts), then the
            later file and row for exact ties.
        single_file: the scan reads one file, so ``filename`` is the same on every row and
            need not be compared.

    Returns:
        The query, its setup statements and (for latest-only pulls) its row count query.

    Raises:
        InvalidRequestError: a requested column is not in the source.
    """
    q = quote_ident
    types = describe(con, scan_sql)
    ts_cols = [timestamp_field] + ([created_timestamp_column] if created_timestamp_column else [])
    _check_columns(types, [*join_key_columns, *feature_name_columns, *ts_cols], scan_sql)
    seen: set[str] = set()
    select: list[str] = []
    for col in [*join_key_columns, *feature_name_columns]:
        if col not in seen:
            seen.add(col)
            select.append(q(col))
    for col in ts_cols:
        if col not in seen:
            seen.add(col)
            select.append(f"CAST({q(col)} AS TIMESTAMPTZ) AS {q(col)}")
    if not join_key_columns:
        select.append(f"{quote_literal(DUMMY_ENTITY_VAL)} AS {q(DUMMY_ENTITY_ID)}")
    where = _window(q(timestamp_field), types[timestamp_field], start_date, end_date)
    cond = " AND ".join(where)
    sql = f"SELECT {', '.join(select)} FROM {scan_sql} WHERE {cond}"
    if not latest_only:
        return Query(sql)
    if all(types[c].upper() in _EPOCH_FUNCTION for c in ts_cols):
        return _latest_by_aggregate(
            types,
            select,
            scan_sql,
            where,
            join_key_columns,
            timestamp_field,
            created_timestamp_column,
            single_file=single_file,
        )
    keys = ", ".join(q(k) for k in join_key_columns)
    partition = f"PARTITION BY {keys} " if join_key_columns else ""
    created = f"{q(created_timestamp_column)} DESC NULLS LAST, " if created_timestamp_column else ""
    # One row per distinct key (one in all for an entity-less view): an extra scan, but
    # this path only serves sources whose timestamps are not whole microseconds.
    groups = f" GROUP BY {keys}" if join_key_columns else " LIMIT 1"
    return Query(
        sql
        + (
            f" QUALIFY row_number() OVER ({partition}ORDER BY {q(timestamp_field)} DESC, "
            f"{created}{FILE_ORDER} DESC, filename DESC, file_row_number DESC) = 1"
        ),
        count_sql=(f"SELECT count(*) FROM (SELECT 1 FROM {scan_sql} WHERE {cond}{groups})"),
    )


# Timestamp column types and the function that gives their exact integer ticks: whole
# microseconds (``epoch_us``) or nanoseconds as pandas writes them by default (``epoch_ns``).
_EPOCH_FUNCTION = {
    "TIMESTAMP": "epoch_us",
    "TIMESTAMP WITH TIME ZONE": "epoch_us",
    "TIMESTAMP_NS": "epoch_ns",
    "TIMESTAMPTZ_NS": "epoch_ns",
}
_I63 = 2**63


def _ticks(col: str, column_type: str, *, null: int | None) -> str:
    """A BIGINT-ranged integer ordered exactly like the timestamp column ``col``.

    The epoch functions map +/-infinity to NULL, so they get the int64 ends (every finite
    DuckDB timestamp lies strictly between). With ``null`` set, a null becomes that value
    and the others are shifted into ``[1, 2**64)`` so that it ranks below them all.
    """
    shift = 0 if null is None else _I63
    epoch = f"{_EPOCH_FUNCTION[column_type.upper()]}({col})"
    finite = f"{epoch}::HUGEINT + {shift}" if shift else f"{epoch}::HUGEINT"
    top, bottom = _I63 - 1 + shift, -(_I63 - 1) + shift
    null_case = "" if null is None else f"WHEN {col} IS NULL THEN {null} "
    return (
        f"CASE {null_case}WHEN {epoch} IS NOT NULL THEN {finite} "
        f"WHEN {col} > TIMESTAMP '1970-01-01' THEN {top} ELSE {bottom} END"
    )


def _latest_by_aggregate(
    types: dict[str, str],
    select: list[str],
    scan_sql: str,
    where: list[str],
    join_key_columns: list[str],
    timestamp_field: str,
    created_timestamp_column: str | None,
    *,
    single_file: bool,
) -> Query:
    """Latest row per key with a hash aggregate and a semi join, instead of a window.

    Per key, ``max`` of the struct ``(order key, file order, filename, file_row_number)``
    names the winning row: the order key packs (event_ts, created_ts with null lowest)
    into one HUGEINT (event ticks in the high 64 bits, shifted created ticks in the low
    64 bits; a tick is the column's own unit, micro- or nanoseconds), so struct order is
    exactly (event_ts, created_ts NULLS FIRST, file order, filename, file_row_number),
    the window's order (file order: the natural sort of paths,
    :data:`~offline_store.sources.FILE_ORDER`). The winners go into a temp table first (the
    semi join needs all of them before its first output row anyway), so counting the rows
    to come is free. A second scan keeps the rows so named; it streams, so the caller
    consumes the first rows while DuckDB is still reading. With a single file the file
    order and the constant ``filename`` are left out of the struct (less memory per key,
    same order).
    """
    q = quote_ident
    event = _ticks(q(timestamp_field), types[timestamp_field], null=None)
    created = (
        _ticks(q(created_timestamp_column), types[created_timestamp_column], null=0)
        if created_timestamp_column
        else "0"
    )
    order_key = f"({event}) * {2**64} + ({created})"
    group = f" GROUP BY {', '.join(q(k) for k in join_key_columns)}" if join_key_columns else ""
    cond = " AND ".join(where)
    win = "__fs_latest"
    file_part, file_match = (
        ("", "")
        if single_file
        else (
            f"o := {FILE_ORDER}, f := filename, ",
            f"filename = {win}.f AND ",
        )
    )
    winners = (
        f"SELECT max(struct_pack(k := {order_key}, {file_part}r := file_row_number)) "
        f"AS {win} FROM {scan_sql} WHERE {cond}{group}"
    )
    return Query(
        f"SELECT {', '.join(select)} FROM {scan_sql} "
        f"SEMI JOIN {win}s ON {file_match}file_row_number = {win}.r WHERE {cond}",
        setup=(f"CREATE OR REPLACE TEMP TABLE {win}s AS {winners}",),
        # Without join keys ``max`` over no rows is one NULL winner.
        count_sql=f"SELECT count(*) FROM {win}s WHERE {win} IS NOT NULL",
    )
