"""Queries for materialization pulls: latest row per entity, or every row, in a time window.

Both take Feast's raw source column names (any field mapping has already been reversed by the
caller, as Feast's interface requires) and return the same columns as Feast's file store: the
join keys, the features, the event timestamp and the created timestamp (``__dummy_id`` for
entity-less views). Timestamps come back as UTC TIMESTAMPTZ.

The window is ``[start, end)``. The bounds are compared against the raw column with a literal
of the column's own type, so DuckDB pushes the filter into the Parquet scan and skips row groups
outside the window.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
from feast.feature_view import DUMMY_ENTITY_ID, DUMMY_ENTITY_VAL

from offline_store.sources import describe, quote_ident, quote_literal, timestamp_literal
from service.errors import InvalidRequestError


def _bound_literal(value: datetime, column_type: str) -> str:
    """A literal comparable with the raw column without casting the column."""
    if column_type.upper() == "TIMESTAMP":
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return f"TIMESTAMP '{value.strftime('%Y-%m-%d %H:%M:%S.%f')}'"
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
) -> str:
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

    Returns:
        The query text.

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
    sql = f"SELECT {', '.join(select)} FROM {scan_sql} WHERE {' AND '.join(where)}"
    if latest_only:
        partition = (
            f"PARTITION BY {', '.join(q(k) for k in join_key_columns)} " if join_key_columns else ""
        )
        created = (
            f"{q(created_timestamp_column)} DESC NULLS LAST, " if created_timestamp_column else ""
        )
        sql += (
            f" QUALIFY row_number() OVER ({partition}ORDER BY {q(timestamp_field)} DESC, "
            f"{created}filename DESC, file_row_number DESC) = 1"
        )
    return sql
