"""Exact point-in-time join as one DuckDB query.

Semantics (DESIGN.md): for each entity row (keys k, time t) and view V with TTL d (0 means
unlimited), take V's rows with the same keys and ``t - d <= event_ts <= t`` and pick the one
with the greatest (event_ts, created_ts); none -> nulls. Every entity row comes back exactly once,
in input order, with its extra columns.

How the query gets there, per view:

1. Scan the source's keys and event times, keeping only rows whose event time can fall in
   some entity row's window (pruning pushed into the Parquet scan), and ``ASOF LEFT JOIN``
   the entity rows to them on the keys and ``t >= event_ts``: each entity row gets the
   greatest event time at or before t (``__m<i>``). The join sorts two narrow columns
   instead of whole feature rows.
2. Scan the source again for the rows at a matched (keys, event time) only (a semi join on
   the step-1 result), with their features and a tie-break key, the struct (created_ts
   with nulls lowest, file order, file name, row number in file); a single-file source
   leaves the two file fields out. A second ``ASOF LEFT JOIN`` on the keys, the matched
   event time and ``probe >= tie-break key``, the probe being (+inf, first file, '', 0),
   picks among them exactly the greatest (event_ts, created_ts), with exact ties going to
   the later file and row. Struct comparison is lexicographic; it runs over the
   candidates alone (one per entity key and time, unless tied), not every feature row.
3. If the match is older than ``t - d`` every other candidate is too, so the TTL check is a
   filter on the match.

The step-1 joins of all views run in one materialized CTE; the step-2 joins are chained
after it in one statement, ordered by the entity row id at the end.
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


# Entity-side probe: greater than every tied feature row, whatever its created time.
_BIGINT_MAX = 9223372036854775807
_BIGINT_MIN = -9223372036854775807
_MATCHES = "__matches"


def _probe_column(view: ViewSpec) -> str:
    """The entity-side probe matching the shape of ``view``'s tie-break key."""
    return "__probe1" if view.single_file else "__probe"


def _probes(views: list[ViewSpec]) -> str:
    """The probe columns the views need: (+inf, first file, '', 0), without the file fields
    for single-file views."""
    shapes = {_probe_column(v) for v in views}
    probes = []
    if "__probe" in shapes:
        probes.append(
            f"{{'cr': {_BIGINT_MAX}, 'o': {FILE_ORDER_FIRST}, 'f': '', "
            "'rn': CAST(0 AS BIGINT)} AS __probe"
        )
    if "__probe1" in shapes:
        probes.append(f"{{'cr': {_BIGINT_MAX}, 'rn': CAST(0 AS BIGINT)}} AS __probe1")
    return "".join(f", {p}" for p in probes)


def _pruning(view: ViewSpec, ts: str, min_ts: datetime | None, max_ts: datetime | None) -> str:
    """The scan filter: rows with an event time that some entity row's window can hold.

    Rows after the last entity time or before the first window can never match. Comparing
    on the cast keeps naive columns read as UTC.
    """
    where = [f"{ts} IS NOT NULL"]
    if max_ts is not None:
        where.append(f"CAST({ts} AS TIMESTAMPTZ) <= {timestamp_literal(max_ts)}")
    if min_ts is not None and view.ttl_seconds > 0:
        where.append(
            f"CAST({ts} AS TIMESTAMPTZ) >= {timestamp_literal(min_ts)} "
            f"- to_microseconds(CAST({int(view.ttl_seconds * 1_000_000)} AS BIGINT))"
        )
    return " AND ".join(where)


def _match_cte(
    index: int, view: ViewSpec, min_ts: datetime | None, max_ts: datetime | None
) -> tuple[str, str]:
    """Step 1 of a view: its (keys, event time) rows, and the ASOF join that gives each
    entity row the view's latest event time at or before its own (``__m<index>``)."""
    q = quote_ident
    alias = f"__t{index}"
    ts = q(_source_column(view, view.timestamp_field))
    keys = [
        f"{q(_source_column(view, mapped))} AS __k{j}"
        for j, (_, mapped) in enumerate(view.join_keys)
    ]
    columns = ", ".join([*keys, f"CAST({ts} AS TIMESTAMPTZ) AS __ts"])
    cte = (
        f"{alias} AS (SELECT {columns} "
        f"FROM {view.scan_sql} WHERE {_pruning(view, ts, min_ts, max_ts)})"
    )
    on = [f"e.{q(e)} = {alias}.__k{j}" for j, (e, _) in enumerate(view.join_keys)]
    on.append(f"e.{ENTITY_TS} >= {alias}.__ts")
    join = f"ASOF LEFT JOIN {alias} ON {' AND '.join(on)}"
    return cte, join


def _candidates_cte(
    index: int, view: ViewSpec, min_ts: datetime | None, max_ts: datetime | None
) -> tuple[str, str, list[str]]:
    """Step 2 of a view: the rows at a matched (keys, event time), their tie-break key, and
    the ASOF join that picks the greatest; with the view's output select items."""
    q = quote_ident
    alias = f"__v{index}"

    def col(mapped: str) -> str:
        return f"s.{q(_source_column(view, mapped))}"

    ts = col(view.timestamp_field)
    cr = col(view.created_timestamp_column) if view.created_timestamp_column else "NULL"
    key_cols = [f"__k{j}" for j in range(len(view.join_keys))]
    feat_cols = [f"__f{j}" for j in range(len(view.features))]
    select = [
        f"{col(mapped)} AS {k}" for (_, mapped), k in zip(view.join_keys, key_cols, strict=True)
    ]
    select += [
        f"{col(f.source_column)} AS {c}" for f, c in zip(view.features, feat_cols, strict=True)
    ]
    # One file: its order and name are the same on every row, so they are left out of the
    # key (and of this view's probe): a shorter struct sorts and compares faster.
    file_part = "" if view.single_file else f"'o': {FILE_ORDER}, 'f': s.filename, "
    select += [
        f"CAST({ts} AS TIMESTAMPTZ) AS __ts",
        # The tie-break key among rows of one event time: (created_ts with nulls lowest,
        # file, row). Comparing it as one struct lets an ASOF join pick the winner.
        f"{{'cr': coalesce(epoch_us(CAST({cr} AS TIMESTAMPTZ)), {_BIGINT_MIN}), "
        f"{file_part}'rn': CAST(s.file_row_number AS BIGINT)}} AS __ord",
    ]
    matched = [f"{col(mapped)} = {_MATCHES}.{q(e)}" for e, mapped in view.join_keys]
    matched.append(f"CAST({ts} AS TIMESTAMPTZ) = {_MATCHES}.__m{index}")
    cte = (
        f"{alias} AS (SELECT {', '.join(select)} FROM {view.scan_sql} s "
        f"SEMI JOIN {_MATCHES} ON {' AND '.join(matched)} "
        f"WHERE {_pruning(view, ts, min_ts, max_ts)})"
    )
    on = [f"e.{q(e)} = {alias}.{k}" for (e, _), k in zip(view.join_keys, key_cols, strict=True)]
    on.append(f"e.__m{index} = {alias}.__ts")
    on.append(f"e.{_probe_column(view)} >= {alias}.__ord")
    if view.ttl_seconds > 0:
        ttl_us = int(view.ttl_seconds * 1_000_000)
        in_window = f"e.__m{index} >= e.{ENTITY_TS} - to_microseconds(CAST({ttl_us} AS BIGINT))"
    else:
        in_window = f"{alias}.__ts IS NOT NULL"
    outs = [
        f"CASE WHEN {in_window} THEN {alias}.{c} END AS {q(f.output_name)}"
        for c, f in zip(feat_cols, view.features, strict=True)
    ]
    return cte, f"ASOF LEFT JOIN {alias} ON {' AND '.join(on)}", outs


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
    select = [
        f"e.{ENTITY_TS} AS {q(c)}" if c == timestamp_column else f"e.{q(c)}" for c in entity_columns
    ]
    if not views:
        return f"SELECT {', '.join(select)} FROM {ENTITY_TABLE} e ORDER BY e.{ROW_ID}"
    ctes: list[str] = []
    matches = []
    for i, view in enumerate(views):
        cte, join = _match_cte(i, view, min_ts, max_ts)
        ctes.append(cte)
        matches.append(join)
    found = ", ".join(f"__t{i}.__ts AS __m{i}" for i in range(len(views)))
    # Referenced by every view's candidates and by the final joins: computed once.
    ctes.append(
        f"{_MATCHES} AS MATERIALIZED (SELECT e.*, {found} FROM {ENTITY_TABLE} e "
        f"{' '.join(matches)})"
    )
    joins: list[str] = []
    for i, view in enumerate(views):
        cte, join, outs = _candidates_cte(i, view, min_ts, max_ts)
        ctes.append(cte)
        joins.append(join)
        select += outs
    probe = f"(SELECT *{_probes(views)} FROM {_MATCHES})"
    return (
        f"WITH {', '.join(ctes)} SELECT {', '.join(select)} FROM {probe} e "
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
