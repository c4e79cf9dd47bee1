"""Exact point-in-time join as one DuckDB query.

Semantics (DESIGN.md): for each entity row (keys k, time t) and view V with TTL d (0 means
unlimited), take V's rows with the same keys and ``t - d <= event_ts <= t`` and pick the one
with the greatest (event_ts, created_ts); none -> nulls. Every entity row comes back exactly once,
in input order, with its extra columns.

How the query gets there, per view:

1. Scan the source, keeping only rows whose event time can fall in some entity row's window
   (pruning pushed into the Parquet scan).
2. Give every feature row an order key, the struct (event_ts, created_ts with nulls lowest,
   file order, file name, row number in file), and every entity row the probe (t, +inf,
   first file, '', 0). A single-file source leaves the two file fields out of both.
3. ``ASOF LEFT JOIN`` entity rows to feature rows on the keys and ``probe >= order key``. Struct
   comparison is lexicographic, so the match is exactly the greatest (event_ts, created_ts) at or
   before t, with exact ties going to the later file and row, in one pass and without a dedupe
   step. If that row is older than ``t - d`` every other candidate is too, so the TTL check is a
   filter on the match.

All views are chained ASOF joins in one statement, ordered by the entity row id at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from offline_store.sources import FILE_ORDER, FILE_ORDER_FIRST, quote_ident, timestamp_literal

ENTITY_TABLE = "__entities"
ROW_ID = "__row_id"
ENTITY_TS = "__entity_ts"


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One requested feature: its column in the (mapped) source and its output name."""

    source_column: str
    output_name: str


@dataclass(frozen=True, slots=True)
class ViewSpec:
    """What the join needs to know about one feature view.

    Attributes:
        name: the view name used in error messages and full feature names.
        scan_sql: a table expression over the source with ``filename``/``file_row_number``.
        column_map: source column -> column name after the source's field mapping.
        join_keys: pairs (entity-side column, mapped source column).
        timestamp_field: mapped event timestamp column.
        created_timestamp_column: mapped created timestamp column, if any.
        features: requested features.
        ttl_seconds: the view TTL; 0 means unlimited.
        single_file: the scan reads one file, so the file order and name are the same on
            every row: constants in the order key instead of a per-row natural-sort key.
    """

    name: str
    scan_sql: str
    column_map: dict[str, str]
    join_keys: tuple[tuple[str, str], ...]
    timestamp_field: str
    created_timestamp_column: str | None
    features: tuple[FeatureSpec, ...]
    ttl_seconds: float
    single_file: bool = False


def _source_column(view: ViewSpec, mapped: str) -> str:
    """Raw source column whose mapped name is ``mapped`` (identity when unmapped)."""
    for raw, target in view.column_map.items():
        if target == mapped:
            return raw
    return mapped


# Entity-side probe: greater than every feature row at or before t, whatever its created time.
_BIGINT_MAX = 9223372036854775807
_BIGINT_MIN = -9223372036854775807


def _probe_column(view: ViewSpec) -> str:
    """The entity-side probe matching the shape of ``view``'s order key."""
    return "__probe1" if view.single_file else "__probe"


def _probes(views: list[ViewSpec]) -> str:
    """The probe columns the views need: (t, +inf, first file, '', 0), without the file
    fields for single-file views."""
    shapes = {_probe_column(v) for v in views}
    probes = []
    if "__probe" in shapes:
        probes.append(
            f"{{'ts': {ENTITY_TS}, 'cr': {_BIGINT_MAX}, 'o': {FILE_ORDER_FIRST}, "
            "'f': '', 'rn': CAST(0 AS BIGINT)} AS __probe"
        )
    if "__probe1" in shapes:
        probes.append(
            f"{{'ts': {ENTITY_TS}, 'cr': {_BIGINT_MAX}, 'rn': CAST(0 AS BIGINT)}} AS __probe1"
        )
    return "".join(f", {p}" for p in probes)


def _view_cte(
    index: int, view: ViewSpec, min_ts: datetime | None, max_ts: datetime | None
) -> tuple[str, str, list[str]]:
    """The source CTE of one view, its ASOF condition, and its output select items."""
    q = quote_ident
    alias = f"__v{index}"
    key_cols = [f"__k{j}" for j in range(len(view.join_keys))]
    feat_cols = [f"__f{j}" for j in range(len(view.features))]

    ts_raw = q(_source_column(view, view.timestamp_field))
    cr_raw = (
        q(_source_column(view, view.created_timestamp_column))
        if view.created_timestamp_column
        else "NULL"
    )
    select = [
        f"{q(_source_column(view, mapped))} AS {k}"
        for (_, mapped), k in zip(view.join_keys, key_cols, strict=True)
    ]
    select += [
        f"{q(_source_column(view, f.source_column))} AS {c}"
        for f, c in zip(view.features, feat_cols, strict=True)
    ]
    # One file: its order and name are the same on every row, so they are left out of the
    # order key (and of this view's probe): a shorter struct sorts and compares faster.
    file_part = "" if view.single_file else f"'o': {FILE_ORDER}, 'f': filename, "
    select += [
        f"CAST({ts_raw} AS TIMESTAMPTZ) AS __ts",
        # The order key: (event_ts, created_ts with nulls lowest, file, row). Comparing it as
        # one struct lets a single ASOF join pick the winner without a dedupe pass.
        f"{{'ts': CAST({ts_raw} AS TIMESTAMPTZ), "
        f"'cr': coalesce(epoch_us(CAST({cr_raw} AS TIMESTAMPTZ)), {_BIGINT_MIN}), "
        f"{file_part}'rn': CAST(file_row_number AS BIGINT)}} AS __ord",
    ]
    where = [f"{ts_raw} IS NOT NULL"]
    # Pruning by the entity time range: rows after the last entity time or before the first
    # window can never match. Comparing on the cast keeps naive columns read as UTC.
    if max_ts is not None:
        where.append(f"CAST({ts_raw} AS TIMESTAMPTZ) <= {timestamp_literal(max_ts)}")
    if min_ts is not None and view.ttl_seconds > 0:
        where.append(
            f"CAST({ts_raw} AS TIMESTAMPTZ) >= {timestamp_literal(min_ts)} "
            f"- to_microseconds(CAST({int(view.ttl_seconds * 1_000_000)} AS BIGINT))"
        )
    cte = (
        f"{alias} AS (SELECT {', '.join(select)} FROM {view.scan_sql} WHERE {' AND '.join(where)})"
    )
    on = [f"e.{q(e)} = {alias}.{k}" for (e, _), k in zip(view.join_keys, key_cols, strict=True)]
    on.append(f"e.{_probe_column(view)} >= {alias}.__ord")
    if view.ttl_seconds > 0:
        ttl_us = int(view.ttl_seconds * 1_000_000)
        in_window = f"{alias}.__ts >= e.{ENTITY_TS} - to_microseconds(CAST({ttl_us} AS BIGINT))"
    else:
        in_window = f"{alias}.__ts IS NOT NULL"
    outs = [
        f"CASE WHEN {in_window} THEN {alias}.{c} END AS {q(f.output_name)}"
        for c, f in zip(feat_cols, view.features, strict=True)
    ]
    return cte, " AND ".join(on), outs


def build_pit_query(
    views: list[ViewSpec],
    entity_columns: list[str],
    timestamp_column: str,
    *,
    min_ts: datetime | None = None,
    max_ts: datetime | None = None,
) -> str:
    """The full point-in-time query over ``__entities``.

    Args:
        views: the views to join, in output order.
        entity_columns: entity table columns to return, in input order.
        timestamp_column: the entity event timestamp column; returned as UTC TIMESTAMPTZ.
        min_ts: earliest entity timestamp (pruning only; ``None`` disables it).
        max_ts: latest entity timestamp (pruning only).

    Returns:
        One SQL statement producing entity columns then feature columns, in entity-row order.
    """
    q = quote_ident
    ctes: list[str] = []
    select = [
        f"e.{ENTITY_TS} AS {q(c)}" if c == timestamp_column else f"e.{q(c)}" for c in entity_columns
    ]
    joins: list[str] = []
    for i, view in enumerate(views):
        cte, on, outs = _view_cte(i, view, min_ts, max_ts)
        ctes.append(cte)
        select += outs
        joins.append(f"ASOF LEFT JOIN __v{i} ON {on}")
    probe = f"(SELECT *{_probes(views)} FROM {ENTITY_TABLE})"
    with_clause = f"WITH {', '.join(ctes)} " if ctes else ""
    return (
        f"{with_clause}SELECT {', '.join(select)} FROM {probe} e "
        f"{' '.join(joins)} ORDER BY e.{ROW_ID}"
    )


def non_entity_sql(views: list[ViewSpec], start: datetime, end: datetime) -> str:
    """Entity rows for a retrieval without ``entity_df``: every key seen in ``[start, end]``.

    Each key gets one row at ``end``, so the join returns its latest values as of ``end``
    (within TTL), matching what Feast's stores return in this mode.

    Args:
        views: the requested views; they must share their join keys.
        start: first event time considered.
        end: the as-of time.

    Returns:
        An SQL query usable as an entity source.
    """
    q = quote_ident
    parts = []
    for view in views:
        keys = [f"{q(_source_column(view, m))} AS {q(e)}" for e, m in view.join_keys]
        ts = q(_source_column(view, view.timestamp_field))
        select = ", ".join([*keys, f"{timestamp_literal(end)} AS event_timestamp"])
        parts.append(
            f"SELECT DISTINCT {select} FROM {view.scan_sql} "
            f"WHERE CAST({ts} AS TIMESTAMPTZ) BETWEEN {timestamp_literal(start)} "
            f"AND {timestamp_literal(end)}"
        )
    return " UNION ".join(parts)
