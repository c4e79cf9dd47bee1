"""DuckDB connections and Parquet source resolution.

Every query runs on a fresh in-memory DuckDB connection configured with a memory limit and a
spill directory, so joins and sorts larger than RAM go to disk instead of failing. Parquet
sources may be one file, a directory (read recursively, hive partitions detected), or a glob;
relative paths resolve against the repo path exactly like Feast's
``FileSource.get_uri_for_file_path``.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from foundation.errors import FeatureStoreError, InvalidRequestError
from offline_store.writes import PARTS_SUFFIX

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class DuckDBSettings:
    """Resource limits for one DuckDB connection.

    Attributes:
        memory_limit: DuckDB ``memory_limit`` (e.g. ``"4GB"``); beyond it operators spill.
        temp_directory: where spilled data goes; created on demand.
        threads: worker threads; ``None`` lets DuckDB use every core.
        max_temp_size: DuckDB ``max_temp_directory_size``, the most one connection may spill;
            ``None`` keeps DuckDB's default (90% of the free disk).
        setup_threads: worker threads for a job's setup statements, when they may use more
            than ``threads`` (nothing consumes rows yet); ``None``: ``threads``.
    """

    memory_limit: str = "4GB"
    temp_directory: str | None = None
    threads: int | None = None
    max_temp_size: str | None = None
    setup_threads: int | None = None


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


def connect(settings: DuckDBSettings) -> duckdb.DuckDBPyConnection:
    """Open an in-memory DuckDB connection with limits, UTC session time zone and ordered output.

    Args:
        settings: memory limit, spill directory and thread count.

    Returns:
        A new connection; the caller closes it.
    """
    temp_dir = settings.temp_directory or os.path.join(
        os.environ.get("TMPDIR", "/tmp"), "featurestore-duckdb"
    )
    os.makedirs(temp_dir, exist_ok=True)
    config: dict[str, str | bool | int | float | list[str]] = {
        "memory_limit": settings.memory_limit,
        "temp_directory": temp_dir,
        # Results must come back in entity-row order; this keeps ORDER BY through COPY/streams.
        "preserve_insertion_order": True,
    }
    if settings.threads:
        config["threads"] = settings.threads
    if settings.max_temp_size:
        config["max_temp_directory_size"] = settings.max_temp_size
    con = duckdb.connect(database=":memory:", config=config)
    # TIMESTAMPTZ values then print and convert as UTC, and naive timestamps cast as UTC.
    execute(con, "SET TimeZone='UTC'")
    # Progress bars would land on the stdout of CLI tools and servers.
    execute(con, "SET enable_progress_bar = false")
    # A job reads each source's footers several times (its row count for the join shape,
    # then each scan of the join): kept for the connection's life, they are read once.
    execute(con, "SET parquet_metadata_cache = true")
    return con


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


def parquet_glob(path: str) -> str:
    """The pattern DuckDB should read for a file, a directory, or a glob.

    Args:
        path: a resolved source path.

    Returns:
        ``path`` itself for files and globs; ``path/**/*.parquet`` for directories.
    """
    if any(ch in path for ch in _GLOB_CHARS) or "://" in path:
        return path
    if os.path.isdir(path):
        return os.path.join(path, "**", "*.parquet")
    return path


def is_single_file(read: str | Sequence[str]) -> bool:
    """Whether a read names exactly one local file (no glob, no directory, no parts).

    Every row of such a scan has the same ``filename``, so orderings need not compare it.
    """
    if not isinstance(read, str):
        return len(read) == 1 and is_single_file(read[0])
    return (
        "://" not in read
        and not any(ch in read for ch in "*?[")
        and os.path.isfile(read)
        and parts_pattern(read) is None
    )


def parts_pattern(pattern: str) -> str | None:
    """The pushed parts of a single-file source, when it has any.

    Pushes to a source defined as one file ``x.parquet`` land as immutable files in
    ``x.parquet.parts/`` (see :mod:`offline_store.writes`); readers take both.

    Args:
        pattern: what :func:`parquet_glob` returned.

    Returns:
        ``<pattern>.parts/*.parquet`` when ``pattern`` is a local file with parts, else None.
    """
    if "://" in pattern or any(ch in pattern for ch in _GLOB_CHARS):
        return None
    parts = os.path.join(pattern + PARTS_SUFFIX, "*.parquet")
    return parts if glob.glob(parts) else None


def source_patterns(pattern: str) -> list[str]:
    """Every pattern a source is read from: the source itself and its pushed parts."""
    parts = parts_pattern(pattern)
    return [pattern] if parts is None else [pattern, parts]


def source_files(path: str) -> list[str]:
    """Every local Parquet file a source reads, pushed parts included, in source order.

    Args:
        path: a resolved source path (file, directory or glob).

    Returns:
        File paths sorted as the readers order them (by path).
    """
    files: list[str] = []
    for pattern in source_patterns(parquet_glob(path)):
        files.extend(glob.glob(pattern, recursive=True))
    return sorted(set(files))


def expand_pattern(pattern: str) -> list[str]:
    """The local files a read pattern matches now (pushed parts included), sorted by path.

    Args:
        pattern: what :func:`parquet_glob` returned (a file, ``dir/**/*.parquet`` or a glob).

    Returns:
        Absolute paths of the matching regular files.
    """
    return sorted(
        os.path.abspath(p)
        for part in source_patterns(pattern)
        for p in glob.glob(part, recursive=True)
        if os.path.isfile(p)
    )


def has_files(pattern: str) -> bool:
    """Whether a local pattern matches at least one file (remote patterns are assumed to)."""
    if "://" in pattern:
        return True
    return bool(glob.glob(pattern, recursive=True))


def parquet_scan(pattern: str | Sequence[str], *, with_order_columns: bool = False) -> str:
    """A ``read_parquet`` table expression for a source pattern or an explicit file list.

    Args:
        pattern: what :func:`parquet_glob` returned, or the exact files to read (a sandboxed
            connection may not list directories, so it reads the files a pattern matched).
        with_order_columns: add ``filename`` and ``file_row_number`` so that rows identical
            in (event_ts, created_ts) can be ordered by where they sit in the source (a later
            file or a later row wins).

    A single-file source is read together with its pushed parts (:func:`parts_pattern`).

    Returns:
        SQL text usable after ``FROM``.

    Raises:
        InvalidRequestError: the pattern (or list) matches no file.
    """
    if isinstance(pattern, str):
        found = has_files(pattern)
        target = quote_literal(pattern)
    else:
        found = bool(pattern)
        target = "[" + ", ".join(quote_literal(p) for p in pattern) + "]"
    if not found:
        raise InvalidRequestError(
            f"offline source {pattern!r} matches no Parquet file; generate the data or fix "
            "the FileSource path (relative paths resolve against the feature repo)",
            source=str(pattern),
        )
    options = "union_by_name=true"
    if with_order_columns:
        options += ", filename=true, file_row_number=true"
    if not isinstance(pattern, str):
        return f"read_parquet({target}, {options})"
    patterns = source_patterns(pattern)
    if len(patterns) == 1:
        return f"read_parquet({target}, {options})"
    # The parts directory's paths extend the file's path, so they sort after it and a
    # later push wins exact ties in "source order".
    listed = ", ".join(quote_literal(p) for p in patterns)
    return f"read_parquet([{listed}], {options})"


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
