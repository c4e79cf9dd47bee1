"""DuckDB settings and statements, and Parquet source resolution.

Every job runs on an in-memory DuckDB database of its own (:mod:`offline_store.connections`)
configured with a memory limit and a spill directory, so joins and sorts larger than RAM go to
disk instead of failing. Parquet
sources may be one file, a directory (read recursively, hive partitions detected, typed as
the feature view declares them: :mod:`offline_store.partitions`), or a glob; relative paths
resolve against the repo path exactly like Feast's ``FileSource.get_uri_for_file_path``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from feast.value_type import ValueType

from foundation.errors import FeatureStoreError
from offline_store.listing import expand_pattern, is_remote, no_files
from offline_store.partitions import DUCKDB_TYPES, duckdb_hive_keys


@dataclass(frozen=True, slots=True)
class DuckDBSettings:
    """Resource limits of a job's DuckDB database.

    Attributes:
        memory_limit: DuckDB ``memory_limit`` (e.g. ``"4GB"``); beyond it operators spill.
        temp_directory: where spilled data goes; created on demand.
        threads: worker threads; ``None`` lets DuckDB use every core.
        max_temp_size: DuckDB ``max_temp_directory_size``, the most one connection may spill;
            ``None`` keeps DuckDB's default (90% of the free disk).
        setup_threads: worker threads for a job's setup statements, when they may use more
            than ``threads`` (nothing consumes rows yet); ``None``: ``threads``.
        parquet_prefetch: DuckDB reads Parquet column chunks ahead (off: prefetching only
            holds memory on local files).
    """

    memory_limit: str = "4GB"
    temp_directory: str | None = None
    threads: int | None = None
    max_temp_size: str | None = None
    setup_threads: int | None = None
    parquet_prefetch: bool = True


# The order files are read in, for "last row in source order" among rows identical in
# (event_ts, created_ts): the natural sort of their paths (``part-2`` before ``part-10``),
# which is dask's ``natural_sort_key``, the order Feast's file offline store reads a
# directory in. Digit runs compare as numbers, the rest as text; ``filename`` (plain
# text) breaks the remaining ties (``a01`` and ``a1``).
_PART = "STRUCT(s VARCHAR, n HUGEINT)"
FILE_ORDER = (
    "list_transform(regexp_extract_all(filename, '[0-9]+|[^0-9]+'), lambda x: "
    "CASE WHEN regexp_full_match(x, '[0-9]+') THEN {'s': '', 'n': TRY_CAST(x AS HUGEINT)} "
    "ELSE {'s': x, 'n': CAST(0 AS HUGEINT)} END)"
)
FILE_ORDER_FIRST = f"CAST([] AS {_PART}[])"  # sorts before every path's key


def execute(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Run a statement to completion (DuckDB 2 keeps results pending until consumed)."""
    con.execute(sql)
    con.complete()


def fetch_all(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    """Run a query and return every row (consuming the result fully)."""
    return list(con.execute(sql).fetchall())


def quote_ident(name: str) -> str:
    """Quote an SQL identifier for DuckDB."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote an SQL string literal for DuckDB."""
    return "'" + value.replace("'", "''") + "'"


def timestamp_literal(value: datetime) -> str:
    """A TIMESTAMPTZ literal for an instant; naive datetimes are read as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    utc = value.astimezone(UTC)
    # isoformat pads the year to four digits (strftime's %Y does not below year 1000).
    return (
        f"TIMESTAMPTZ '{utc.replace(tzinfo=None).isoformat(sep=' ', timespec='microseconds')}+00'"
    )


def resolve_path(repo_path: Path | str | None, uri: str) -> str:
    """Absolute path of a FileSource URI, as Feast resolves it.

    Args:
        repo_path: the feature repo directory (``RepoConfig.repo_path``).
        uri: the source path as written in the definitions.

    Returns:
        The resolved path (remote URIs are returned unchanged).
    """
    if "://" in uri:
        return uri
    if repo_path is not None and not Path(uri).is_absolute():
        return str(Path(repo_path) / uri)
    return str(Path(uri))


def parquet_scan(
    pattern: str | Sequence[str],
    *,
    with_order_columns: bool = False,
    partition_types: Mapping[str, ValueType] | None = None,
) -> str:
    """A ``read_parquet`` table expression for a source pattern or an explicit file list.

    Args:
        pattern: what :func:`~offline_store.listing.parquet_glob` returned, or the exact
            files to read. A local pattern is read as the files
            :func:`~offline_store.listing.expand_pattern` lists (pushed parts included,
            hidden names left out), the list the Spark store reads too; a remote one as
            DuckDB globs it.
        with_order_columns: add ``filename`` and ``file_row_number`` so that rows identical
            in (event_ts, created_ts) can be ordered by where they sit in the source (a later
            file or a later row wins).
        partition_types: for a feature source, the types of its hive partition columns
            (:func:`offline_store.partitions.declared_types`): those read with these types,
            the others as text, never as DuckDB guesses them from the folder names. ``None``
            (entity rows) keeps DuckDB's guess; remote patterns, whose files DuckDB lists,
            too.

    Returns:
        SQL text usable after ``FROM``.

    Raises:
        InvalidRequestError: the pattern (or list) matches no file.
    """
    if isinstance(pattern, str):
        files = [pattern] if is_remote(pattern) else expand_pattern(pattern)
    else:
        files = list(pattern)
    if not files:
        raise no_files(str(pattern))
    options = "union_by_name=true"
    if with_order_columns:
        options += ", filename=true, file_row_number=true"
    local = not isinstance(pattern, str) or not is_remote(pattern)
    if local and partition_types is not None:
        options += _hive_options(files, partition_types)
    listed = ", ".join(quote_literal(_glob_escaped(p) if local else p) for p in files)
    return f"read_parquet([{listed}], {options})"


def _hive_options(files: Sequence[str], types: Mapping[str, ValueType]) -> str:
    """Partition columns typed as declared (``hive_types``), the others text.

    ``hive_types`` turns partitioning on and must name partitions of every file, so it is
    given only when all files have the same keys (otherwise DuckDB finds no partitions).
    """
    options = ", hive_types_autocast=false"
    keys = [duckdb_hive_keys(f) for f in files]
    if len({frozenset(k) for k in keys}) != 1:
        return options
    typed = [(key, DUCKDB_TYPES[types[key]]) for key in keys[0] if types.get(key) in DUCKDB_TYPES]
    if typed:
        entries = ", ".join(f"{quote_literal(k)}: {quote_literal(t)}" for k, t in typed)
        options += f", hive_types={{{entries}}}"
    return options


def _glob_escaped(path: str) -> str:
    """A file path as a DuckDB glob matching that file alone (``[``, ``*``, ``?`` bracketed)."""
    return re.sub(r"([\[*?])", r"[\1]", path)


def describe(con: duckdb.DuckDBPyConnection, table_sql: str) -> dict[str, str]:
    """Column name -> DuckDB type name of a table expression.

    Args:
        con: an open connection.
        table_sql: anything valid after ``FROM``.

    Returns:
        The columns in order.

    Raises:
        FeatureStoreError: DuckDB cannot read the table.
    """
    try:
        rows = fetch_all(con, f"DESCRIBE SELECT * FROM {table_sql}")
    except duckdb.Error as exc:
        raise FeatureStoreError(f"cannot read offline data {table_sql}: {exc}") from exc
    return {str(r[0]): str(r[1]) for r in rows}
