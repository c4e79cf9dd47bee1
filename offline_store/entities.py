"""Loading the entity rows of a point-in-time request into DuckDB.

An entity source is a pandas DataFrame, an Arrow table, a Parquet path (file, directory, glob)
or an SQL query over the offline data (each feature view's source is visible as a view named
after the view and after its batch source). Whatever the kind, the rows land in one temp table
whose ``rowid`` is the input order, behind a view that adds the UTC event timestamp.

Rows from untrusted callers arrive as :mod:`offline_store.sandbox` records instead: a checked
SELECT, which is bound as a relation of its own (its text is never pasted into ours), or files
already confined to the entity directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeAlias

import duckdb
import pandas as pd
import pyarrow as pa

from foundation.errors import InvalidRequestError, InvalidTimestampError
from offline_store.checks import check_entity_columns
from offline_store.ipc import too_many_entity_rows
from offline_store.listing import parquet_glob
from offline_store.pit_join import ENTITY_TABLE, ENTITY_TS, ROW_ID
from offline_store.sandbox import ConfinedFiles, SandboxedSql
from offline_store.sources import execute, fetch_all, parquet_scan, quote_ident

EntitySource: TypeAlias = pd.DataFrame | pa.Table | str | Path
# What the join loads: a caller's own source, or the rows of an untrusted one.
LoadableSource: TypeAlias = EntitySource | SandboxedSql | ConfinedFiles
_INPUT = "__entity_input"
DEFAULT_TIMESTAMP_COLUMN = "event_timestamp"
_ROWS_TABLE = "__entity_rows"
_TIMESTAMP_TYPES = ("TIMESTAMP", "DATE")
_SQL_STARTS = ("select", "with", "from", "(", "values", "table")


@dataclass(frozen=True, slots=True)
class LoadedEntities:
    """What the join needs to know about the loaded entity rows.

    Attributes:
        columns: the input columns, in input order.
        types: DuckDB type of each input column.
        timestamp_column: the column used as the entity event time.
        num_rows: how many entity rows.
        min_ts: earliest entity time (UTC), ``None`` when there are no rows.
        max_ts: latest entity time (UTC).
    """

    columns: list[str]
    types: dict[str, str]
    timestamp_column: str
    num_rows: int
    min_ts: datetime | None
    max_ts: datetime | None


# Whitespace and SQL comments (``-- ...`` to the end of the line, ``/* ... */``) before a
# query's first keyword.
_LEADING_COMMENTS = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)


def is_sql(source: str) -> bool:
    """Whether an entity source string is an SQL query rather than a Parquet path."""
    start = _LEADING_COMMENTS.match(source)
    head = source[start.end() if start else 0 :].lower()
    return head.startswith(_SQL_STARTS) and not os.path.exists(source)


def _input_relation(con: duckdb.DuckDBPyConnection, source: LoadableSource) -> str:
    """Register the source on ``con`` and return SQL text for it after ``FROM``."""
    if isinstance(source, SandboxedSql):
        # Bound on its own: a comment or parenthesis in the caller's text cannot reach
        # into the statement that copies the rows.
        try:
            con.sql(source.sql).create_view(_INPUT, replace=True)
        except duckdb.Error as exc:
            raise InvalidRequestError(f"entity_sql failed: {_caller_error(exc)}") from exc
        return _INPUT
    if isinstance(source, ConfinedFiles):
        return parquet_scan(source.paths)
    if isinstance(source, pd.DataFrame):
        con.register(_INPUT, entity_table(source))
        return _INPUT
    if isinstance(source, pa.Table):
        con.register(_INPUT, source)
        return _INPUT
    if isinstance(source, (str, Path)):
        text = str(source)
        if isinstance(source, str) and is_sql(text):
            return f"({text})"
        return parquet_scan(parquet_glob(text))
    raise InvalidRequestError(
        f"unsupported entity source of type {type(source).__name__}; pass a pandas "
        "DataFrame, a pyarrow Table, a Parquet path or an SQL query string",
    )


# pyarrow converts a DataFrame's columns in a thread pool it starts on every call; below
# this many rows starting it costs more than its threads save (2 cores: 100k entity rows
# take 9-24 ms threaded and 4 ms not; 1M rows 66-81 ms and 34 ms; 3M rows about even).
_THREADED_FROM_ROWS = 2_000_000


def entity_table(frame: pd.DataFrame) -> pa.Table:
    """Entity rows given as a DataFrame, as an Arrow table (the index is not a column).

    Raises:
        InvalidTimestampError: a column Arrow cannot convert (mixed kinds).
    """
    threads = None if len(frame) >= _THREADED_FROM_ROWS else 1
    try:
        return pa.Table.from_pandas(frame, preserve_index=False, nthreads=threads)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InvalidTimestampError(
            f"entity DataFrame cannot be converted to Arrow ({exc}); a column mixes "
            "types, often naive and timezone-aware timestamps: make them all one kind",
        ) from exc


def _caller_error(exc: BaseException) -> str:
    """DuckDB's message without the ``LINE n:`` excerpt of the SQL it was running."""
    text = str(exc).split("\nLINE ", 1)[0].strip()
    return " ".join(text.split())


def _pick_timestamp_column(types: dict[str, str]) -> str:
    if DEFAULT_TIMESTAMP_COLUMN in types:
        return DEFAULT_TIMESTAMP_COLUMN
    candidates = [c for c, t in types.items() if t.upper().startswith(_TIMESTAMP_TYPES)]
    if len(candidates) == 1:
        return candidates[0]
    raise InvalidTimestampError(
        f"entity rows need a column named {DEFAULT_TIMESTAMP_COLUMN!r} with the time of each "
        f"row (found columns {sorted(types)}); rename your timestamp column",
        columns=sorted(types),
    )


def load_entities(
    con: duckdb.DuckDBPyConnection,
    source: LoadableSource,
    *,
    materialize: bool = True,
    max_rows: int | None = None,
) -> LoadedEntities:
    """Materialize the entity rows into ``__entities`` (plus row id and UTC time).

    Args:
        con: the connection the join will run on.
        source: a DataFrame, Arrow table, Parquet path or SQL query, or an untrusted
            caller's checked SELECT or confined files.
        materialize: copy the rows into a temp table (needed for the join, whose row id is
            the table's ``rowid``); without it only a view is made, enough for statistics.
        max_rows: refuse more entity rows than this; reading stops one row past it, so an
            oversized query costs no more than the limit.

    Returns:
        Column names, types, the timestamp column, row count and time range.

    Raises:
        InvalidRequestError: the source cannot be read (bad SQL, missing file).
        InvalidTimestampError: no usable timestamp column, unparseable or null timestamps.
        RequestTooLargeError: more than ``max_rows`` rows.
    """
    if isinstance(source, (pd.DataFrame, pa.Table)):
        # Checked before DuckDB sees them: it would rename one of two names that differ
        # only in case.
        check_entity_columns(
            [str(c) for c in source.columns]
            if isinstance(source, pd.DataFrame)
            else source.column_names
        )
    relation = _input_relation(con, source)
    limit = "" if max_rows is None else f" LIMIT {int(max_rows) + 1}"
    try:
        kind = "TABLE" if materialize else "VIEW"
        execute(con, f"CREATE TEMP {kind} {_ROWS_TABLE} AS SELECT * FROM {relation}{limit}")
    except (duckdb.InterruptException, duckdb.OutOfMemoryException):
        raise  # a request limit, not a fault in the rows: the job reports it
    except duckdb.Error as exc:
        if isinstance(source, (SandboxedSql, ConfinedFiles)):
            what = "entity_sql" if isinstance(source, SandboxedSql) else "entity_path"
            raise InvalidRequestError(f"{what} failed: {_caller_error(exc)}") from exc
        raise InvalidRequestError(
            f"cannot read the entity rows: {exc}; check the SQL or the Parquet path",
        ) from exc
    if max_rows is not None:
        count = int(fetch_all(con, f"SELECT count(*) FROM {_ROWS_TABLE}")[0][0])
        if count > max_rows:
            raise too_many_entity_rows(max_rows)
    types = {str(r[0]): str(r[1]) for r in fetch_all(con, f"DESCRIBE SELECT * FROM {_ROWS_TABLE}")}
    check_entity_columns(list(types))
    ts_col = _pick_timestamp_column(types)
    ts = quote_ident(ts_col)
    bad = fetch_all(
        con,
        f"SELECT count(*) FILTER (WHERE {ts} IS NULL), "
        f"count(*) FILTER (WHERE {ts} IS NOT NULL AND TRY_CAST({ts} AS TIMESTAMPTZ) IS NULL) "
        f"FROM {_ROWS_TABLE}",
    )[0]
    if bad[0] or bad[1]:
        raise InvalidTimestampError(
            f"entity column {ts_col!r} has {bad[0]} null and {bad[1]} unparseable timestamps; "
            "every entity row needs a time (ISO 8601 strings or datetimes; naive means UTC)",
            column=ts_col,
        )
    row_id = "rowid" if materialize else "0"
    execute(
        con,
        f"CREATE TEMP VIEW {ENTITY_TABLE} AS SELECT {row_id} AS {ROW_ID}, *, "
        f"CAST({ts} AS TIMESTAMPTZ) AS {ENTITY_TS} FROM {_ROWS_TABLE}",
    )
    row = fetch_all(
        con, f"SELECT count(*), min({ENTITY_TS}), max({ENTITY_TS}) FROM {ENTITY_TABLE}"
    )[0]
    return LoadedEntities(
        columns=list(types),
        types=types,
        timestamp_column=ts_col,
        num_rows=int(row[0]),
        min_ts=row[1],
        max_ts=row[2],
    )
