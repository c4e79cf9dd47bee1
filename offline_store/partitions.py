"""Types of hive partition columns: what the feature view declares, text otherwise.

A partition column's values are folder names (``day=2024-01-01/``), text. Left to themselves
the engines guess a type from that text: DuckDB's ``read_parquet`` casts ``2024-01-01`` to a
DATE and ``7`` to a BIGINT, Spark's partition discovery
(``spark.sql.sources.partitionColumnTypeInference``) does the same and reads ``0042`` as the
integer 42, and pyarrow reads ``0042`` as int32. A String feature would then reach a training
set as a date while it is served as a string, and a String join key ``0042`` would stop
matching the entity rows that name it. So both stores read partition columns with the types
the engines are told, never guessed:

- a column the feature view declares (a feature or a join key, under its source name) has
  the declared type (:data:`DUCKDB_TYPES`; Spark: :func:`offline_store.spark_schema.spark_type`;
  pushes: :func:`arrow_type`);
- the source's event and created timestamp columns are timestamps (a daily snapshot
  partitioned by its event date, ``ds=2024-01-01``, keeps ordering and filtering by time);
- every other partition column is text: the folder name as written, which any declared type
  reads exactly (materialization pulls are given the source and column names only, not the
  view, so a pulled Int64 partition column is its text ``"3"``, which Feast's and our
  online writers convert to the integer 3).

DuckDB names the partitions of a file list from every ``key=value`` folder of each path
(:func:`duckdb_hive_keys`; :func:`offline_store.sources.parquet_scan` builds its options), Spark
from the folders below its ``basePath`` (:func:`spark_partition_names`).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping, Sequence

import pyarrow as pa
from feast.data_source import DataSource
from feast.feature_view import FeatureView
from feast.value_type import ValueType

# The declared types a partition value converts to the same way on every engine; any other
# declared type (bytes, lists...) is read as text.
DUCKDB_TYPES: Mapping[ValueType, str] = {
    ValueType.STRING: "VARCHAR",
    ValueType.INT64: "BIGINT",
    ValueType.INT32: "INTEGER",
    ValueType.DOUBLE: "DOUBLE",
    ValueType.FLOAT: "FLOAT",
    ValueType.BOOL: "BOOLEAN",
    # Jobs run with TimeZone=UTC (offline_store.connections): a value without an offset is UTC.
    ValueType.UNIX_TIMESTAMP: "TIMESTAMPTZ",
}
ARROW_TYPES: Mapping[ValueType, pa.DataType] = {
    ValueType.STRING: pa.string(),
    ValueType.INT64: pa.int64(),
    ValueType.INT32: pa.int32(),
    ValueType.DOUBLE: pa.float64(),
    ValueType.FLOAT: pa.float32(),
    ValueType.BOOL: pa.bool_(),
    ValueType.UNIX_TIMESTAMP: pa.timestamp("us", tz="UTC"),
}


def arrow_type(value_type: ValueType | None) -> pa.DataType:
    """The Arrow type a pushed partition value is cast to (string when undeclared)."""
    if value_type is None:
        return pa.string()
    return ARROW_TYPES.get(value_type, pa.string())


def timestamp_types(*columns: str | None) -> dict[str, ValueType]:
    """The source's timestamp columns (``None`` and empty names left out) as timestamps."""
    return {c: ValueType.UNIX_TIMESTAMP for c in columns if c}


def declared_types(view: FeatureView) -> dict[str, ValueType]:
    """Source column -> the type ``view`` declares for it, for every column a partition
    folder could hold: its features and join keys (field mapping reversed, as the source
    names them) and its source's timestamp columns.

    Args:
        view: a feature view with a batch source.

    Returns:
        The declared types that :data:`DUCKDB_TYPES` knows; other columns are text.
    """
    source: DataSource | None = view.batch_source
    mapping = dict(source.field_mapping or {}) if source is not None else {}
    reverse = {target: raw for raw, target in mapping.items()}
    types: dict[str, ValueType] = {}
    for field in [*view.entity_columns, *view.features]:
        value_type = field.dtype.to_value_type()
        if value_type in DUCKDB_TYPES:
            types[reverse.get(field.name, field.name)] = value_type
    if source is not None:
        stamps = (source.timestamp_field, source.created_timestamp_column)
        types.update(timestamp_types(*stamps, *(reverse.get(s, "") for s in stamps if s)))
    return types


def duckdb_hive_keys(path: str) -> list[str]:
    """The partition keys DuckDB reads from a file path, as its ``HivePartitioning::Parse``
    reads them: every folder ``key=value`` of the whole path with one ``=`` after a non-empty
    key, no ``?`` and no newline (the file name itself is not a folder)."""
    if "=" not in path:  # the usual source: no folder can be a partition
        return []
    keys: dict[str, None] = {}
    start = equals = 0
    candidate = True
    for i, char in enumerate(path):
        if char in "?\n":
            candidate = False
        if char in "/\\":
            if candidate and equals > start:
                keys.setdefault(path[start:equals])
            start, candidate = i + 1, True
        elif char == "=":
            if equals > start:
                candidate = False
            equals = i
    return list(keys)


def spark_partition_names(files: Sequence[str], base: str | None) -> list[str]:
    """The partition columns Spark's discovery finds for ``files`` below ``base``.

    As Spark's ``PartitioningUtils`` walks each file's folders up to the base path: folders
    without ``=`` below the partition folders are skipped, the run of ``key=value`` folders
    above them is the file's partitions, and a plain folder above that run ends it. Names
    are unescaped as Spark unescapes them.

    Args:
        files: the local files read.
        base: Spark's ``basePath``; without one Spark finds no partitions.

    Returns:
        The names, outermost folder first.
    """
    names: dict[str, None] = {}
    if base is None:
        return []
    for file in files:
        relative = os.path.relpath(os.path.dirname(file), base)
        if relative == "." or relative.startswith(".."):
            continue
        found: list[str] = []
        for folder in reversed(relative.split(os.sep)):
            key, equals, _ = folder.partition("=")
            if not equals:
                if found:
                    break
                continue
            found.append(urllib.parse.unquote(key))
        for name in reversed(found):
            names.setdefault(name)
    return list(names)
