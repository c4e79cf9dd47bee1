"""Reading feature sources into Spark DataFrames, exactly as the DuckDB store reads them.

A Feast ``FileSource`` (a Parquet file with its pushed parts, a directory, hive partitions
included, or a glob) and Feast's ``SparkSource`` (``table``, ``query`` or ``path`` with a
``file_format``) become a DataFrame with extra columns, the order of each row within the
source: ``__o_f`` (the file's place in source order, only when the source has several files)
and ``__o_rn`` (its row number in that file), from Spark's ``_metadata`` of Parquet files.
Ties on (event_ts, created_ts) go to the later file and row, as in the DuckDB store.

A local FileSource is read as the list of files :mod:`offline_store.listing` gives, the list
the DuckDB store reads, handed to Spark file by file: Spark's own listing of a directory or a
``**`` glob is not DuckDB's (it reads neither nested plain folders nor ``**`` recursively).
Source order is the natural sort of those paths (``part-2`` before ``part-10``), each row's
file looked up in one map literal of them. A SparkSource's path, and remote URIs, are
listed by Spark (their files ranked the same way). Tables and queries have no file order:
their rows get Spark's ``monotonically_increasing_id`` instead (stable for a given plan, but
not a storage order).

Schemas come from the files' footers when they can (:mod:`offline_store.spark_schema`), so
that Spark runs no job to infer them, and nanosecond timestamps are turned into microseconds.
A FileSource's hive partition columns are in the schema Spark is given, typed as the feature
view declares them or as text (:mod:`offline_store.partitions`): Spark casts the folder names
to those types instead of inferring one (``day=2024-01-01`` a date, ``k=0042`` the integer 42).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from feast.data_source import DataSource
from feast.infra.offline_stores.file_source import FileSource
from feast.repo_config import RepoConfig
from feast.value_type import ValueType

from foundation.errors import InvalidRequestError
from offline_store.listing import (
    HIDDEN_PREFIXES,
    file_order_key,
    has_glob,
    is_remote,
    no_files,
    pattern_root,
    source_files,
)
from offline_store.partitions import spark_partition_names
from offline_store.sources import resolve_path
from offline_store.spark_schema import (
    from_nanos,
    nanosecond_columns,
    quoted,
    shared_schema,
    with_partition_types,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import StructType

ORDER_FILE = "__o_f"
ORDER_ROW = "__o_rn"
_PATH = "__o_path"
# The scheme Spark puts before a local path (``file:/x`` in ``_metadata``, ``file:///x`` in
# ``inputFiles()``), removed in both so that paths compare with the listing's.
_LOCAL_SCHEME = "^file:(//)?"
# Sources of more files than this leave the schema to Spark (its merge reads the footers in
# parallel, on the cluster).
_MAX_FOOTERS = 256


def _spark_source_type() -> type | None:
    try:
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import (
            SparkSource,
        )
    except ImportError:  # pyspark missing: no SparkSource can exist either
        return None
    return SparkSource


def check_source(source: DataSource | None, owner: str) -> DataSource:
    """The source itself if the Spark store can read it.

    Raises:
        InvalidRequestError: neither a FileSource nor a SparkSource.
    """
    spark_source = _spark_source_type()
    if isinstance(source, FileSource):
        return source
    if (
        spark_source is not None
        and isinstance(source, DataSource)
        and isinstance(source, spark_source)
    ):
        return source
    raise InvalidRequestError(
        f"{owner} reads from {type(source).__name__}; the Spark offline store reads FileSource "
        "(Parquet) and SparkSource (table, query or path) sources",
    )


@dataclass(frozen=True, slots=True)
class ParquetRead:
    """What Spark reads for a Parquet source.

    Attributes:
        paths: what the reader is given (escaped files, or a path Spark lists itself).
        files: the local files, in source order, when they were listed here; ``None`` when
            Spark lists them (remote URIs, a SparkSource's path).
        base: the folder hive partitions are found below (``basePath``), if any.
        description: the source as named in messages.
    """

    paths: list[str]
    files: list[str] | None
    base: str | None
    description: str


def file_read(path: str, *, entity: bool = False) -> ParquetRead:
    """How Spark reads a FileSource path (or an entity path, ``entity``): the files the DuckDB
    store reads, listed once.

    Local paths are listed by :func:`offline_store.listing.source_files` (a directory
    recursively, a glob as DuckDB expands it, a file with its pushed parts; hidden names
    left out) and handed to Spark one by one, so Spark reads exactly that list. Remote
    paths are left to Spark's listing.

    Raises:
        InvalidRequestError: nothing matches, or a file Spark would silently skip.
    """
    if is_remote(path):
        return ParquetRead([path], None, None, path)
    files = source_files(path)
    if not files:
        raise no_files(path, entity=entity)
    for file in files:
        if os.path.basename(file).startswith(HIDDEN_PREFIXES):
            raise InvalidRequestError(
                f"offline source file {file!r} starts with '.' or '_', which Spark never "
                "reads (it takes such files for metadata); rename the file",
                source=path,
            )
    base = None  # absolute, as the files are: the JVM's working directory may differ
    if os.path.isdir(path):
        base = os.path.abspath(path)
    elif has_glob(path):
        base = os.path.abspath(pattern_root(path))
    return ParquetRead([_hadoop_escaped(f) for f in files], files, base, path)


def _hadoop_escaped(path: str) -> str:
    """A file path as a Hadoop glob matching that file alone (Spark globs every path)."""
    return re.sub(r"([\\*?\[\]{}])", r"\\\1", path)


def read_parquet(
    spark: SparkSession,
    read: ParquetRead,
    partition_types: Mapping[str, ValueType] | None = None,
) -> DataFrame:
    """The DataFrame of a Parquet read, with its order columns.

    Args:
        spark: the session.
        read: what to read (:func:`file_read`).
        partition_types: for a feature source, the types of its hive partition columns
            (:func:`offline_store.partitions.declared_types`): those read with these types,
            the others as text, never as Spark infers them from the folder names. ``None``
            (entity rows), and reads Spark lists itself, keep Spark's inference.

    Raises:
        InvalidRequestError: Spark cannot read the files.
    """
    from pyspark.sql import functions as F

    files = read.files
    # Merging schemas runs a Spark job: only when several files may differ.
    if files is not None:
        single = len(files) == 1
    else:  # a SparkSource path: one local file, or what Spark lists
        only = read.paths[0]
        single = not is_remote(only) and not has_glob(only) and os.path.isfile(only)
    as_string = spark.conf.get("spark.sql.parquet.binaryAsString", "false") or "false"
    binary_as_string = as_string.strip().lower() == "true"  # as Spark reads a boolean setting
    known = None
    if files is not None and len(files) <= _MAX_FOOTERS:
        known = shared_schema(files, binary_as_string)
    partitions: list[str] = []
    if partition_types is not None and files is not None:
        partitions = spark_partition_names(files, read.base)
    declared = partition_types or {}
    schema = known[0] if known is not None else None  # Spark's own inference runs a job
    if schema is not None and partitions:
        schema = with_partition_types(schema, partitions, declared)
    frame = _load(spark, read, single, schema)
    if schema is None and partitions:
        # Inferred (partition types guessed): read again with that schema and the partition
        # types, which runs no job.
        found = [p for p in partitions if p in frame.columns]
        frame = _load(spark, read, single, with_partition_types(frame.schema, found, declared))
    nanos = known[1] if known is not None else nanosecond_columns(files or read.paths)
    frame = from_nanos(frame, nanos)
    row = F.col("_metadata.row_index").alias(ORDER_ROW)
    if single:
        # One file: its path is the same on every row and orders nothing; leaving it out
        # keeps a column out of every shuffle and sort of the join.
        return frame.select("*", row)
    if files is None:
        files = sorted((_decoded(f) for f in frame.inputFiles()), key=file_order_key)
    return _with_file_rank(frame.select("*", _file_path(), row), files)


def _load(
    spark: SparkSession, read: ParquetRead, single: bool, schema: StructType | None
) -> DataFrame:
    reader = spark.read.option("mergeSchema", str(not single).lower())
    if read.base is not None:
        reader = reader.option("basePath", read.base)
    if schema is not None:
        reader = reader.schema(schema)
    try:
        return reader.parquet(*read.paths)
    except Exception as exc:  # AnalysisException: missing path, not Parquet
        raise InvalidRequestError(
            f"Spark cannot read the offline source {read.description!r}: "
            f"{str(exc).splitlines()[0]}; fix the source path",
            source=read.description,
        ) from exc


def _decoded(uri: str) -> str:
    """A path as Spark reports it (a URI, percent-encoded), as the file system names it."""
    return re.sub(_LOCAL_SCHEME, "", urllib.parse.unquote(uri))


def _file_path() -> Column:
    """Each row's file, decoded as :func:`_decoded` decodes it (``+`` is literal in a URI
    path, but ``url_decode`` reads it as a space)."""
    from pyspark.sql import functions as F

    encoded = F.replace(F.col("_metadata.file_path"), F.lit("+"), F.lit("%2B"))
    return F.regexp_replace(F.url_decode(encoded), _LOCAL_SCHEME, "").alias(_PATH)


def _with_file_rank(frame: DataFrame, files: list[str]) -> DataFrame:
    """``frame`` with ``__o_f``, each row's file's place in source order (``files``), in
    place of its path: a long compares faster than a path in every sort of the join, and
    in natural order (``part-2`` before ``part-10``), as DuckDB orders files. The ranks are
    one map literal (one SQL expression, however many files): Spark looks a path up in it
    faster than it joins, and a path missing from it is an error, never a silent null."""
    from pyspark.sql import functions as F

    entries = ", ".join(f"{_sql_string(f)}, {i}L" for i, f in enumerate(files))
    rank = F.expr(f"try_element_at(map({entries}), {_PATH})")
    missing = F.raise_error(F.concat(F.lit("file not in the source listing: "), F.col(_PATH)))
    columns = [F.col(quoted(c)) for c in frame.columns if c not in (_PATH, ORDER_ROW)]
    return frame.select(
        *columns, F.coalesce(rank, missing.cast("long")).alias(ORDER_FILE), F.col(ORDER_ROW)
    )


def _sql_string(text: str) -> str:
    """``text`` as a Spark SQL expression that no parser setting reads differently: its UTF-8
    bytes in hex, decoded (folded to a constant when the plan is optimized)."""
    return f"decode(unhex('{text.encode('utf-8', 'surrogateescape').hex()}'), 'UTF-8')"


def order_columns(frame: DataFrame) -> list[str]:
    """A read source's order columns: file and row when it has several files, else the row."""
    return [c for c in (ORDER_FILE, ORDER_ROW) if c in frame.columns]


def source_key(source: DataSource) -> tuple[Any, ...]:
    """What :func:`read_source` reads for ``source``: equal keys, equal DataFrames."""
    if isinstance(source, FileSource):
        return ("file", source.path)
    return (
        "spark",
        getattr(source, "table", None),
        getattr(source, "query", None),
        getattr(source, "path", None),
        getattr(source, "file_format", None),
    )


def read_source(
    spark: SparkSession,
    config: RepoConfig,
    source: DataSource,
    partition_types: Mapping[str, ValueType],
) -> DataFrame:
    """A source as a DataFrame with its order columns ``__o_rn`` and (several files) ``__o_f``.

    Args:
        spark: the session.
        config: the repo config (relative paths resolve against its ``repo_path``).
        source: a FileSource or a SparkSource.
        partition_types: the types of a FileSource's hive partition columns (see
            :func:`read_parquet`); the other columns of those are read as text.

    Returns:
        The source's raw columns (no field mapping applied) plus the order columns.

    Raises:
        InvalidRequestError: another kind of source, or a path Spark cannot read.
    """
    from pyspark.sql import functions as F

    source = check_source(source, f"data source {source.name!r}")
    if isinstance(source, FileSource):
        read = file_read(resolve_path(config.repo_path, source.path))
        return read_parquet(spark, read, partition_types)
    table, query, path = source.table, source.query, source.path  # type: ignore[attr-defined]
    fmt = source.file_format or "parquet"  # type: ignore[attr-defined]
    if path and fmt == "parquet":
        resolved = resolve_path(config.repo_path, path)
        # A SparkSource's path means what it means to Spark (its listing, its globs).
        return read_parquet(spark, ParquetRead([resolved], None, None, resolved))
    if path:
        frame = spark.read.format(fmt).load(resolve_path(config.repo_path, path))
    elif table:
        frame = spark.table(table)
    else:
        frame = spark.sql(query)
    return frame.select("*", F.monotonically_increasing_id().alias(ORDER_ROW))
