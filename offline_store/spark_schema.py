"""Spark schemas of local Parquet files, read from their footers instead of by a Spark job.

Spark infers a Parquet source's schema with a one-task job on every read (about 0.45 s in a
fresh session, 0.1 s in a warm one), and merges several files' schemas with another. For local
files :func:`footer_schema` builds, from each footer (pyarrow), the schema Spark's converter
would give: flat columns of plain types (booleans, signed ints of every width, floats, strings,
binary, dates, decimals within Spark's limits, milli/micro timestamps), nanosecond timestamps
as longs under the forced ``nanosAsLong``; anything else is left to Spark's inference.

Parquet ``TIMESTAMP(NANOS)`` columns (pandas' default) arrive as int64 nanoseconds and are
turned back into microsecond timestamps, rounded as DuckDB rounds them (:func:`from_nanos`).

Hive partition columns get their types from the schema given to the reader
(:func:`with_partition_types`), which Spark casts the folder names to instead of guessing a
type from them (:mod:`offline_store.partitions`).
"""

from __future__ import annotations

import glob
import json
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from feast.value_type import ValueType

from offline_store.listing import has_glob, is_remote

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.types import DataType, StructType


def nanosecond_columns(paths: list[str]) -> set[str]:
    """Columns stored as ``TIMESTAMP(NANOS)`` in the Parquet files at ``paths`` (files,
    directories, or globs expanded as Hadoop expands them: ``**`` is ``*``)."""
    found: set[str] = set()
    for path in paths:
        target: str | list[str] = path
        if not is_remote(path) and has_glob(path):
            target = sorted(glob.glob(path))
            if not target:
                continue
        try:
            schema = pads.dataset(target, format="parquet", partitioning="hive").schema
        except (OSError, pa.ArrowInvalid):
            continue  # Spark reports unreadable paths itself, with the path in the message
        found.update(f.name for f in schema if is_nanos(f.type))
    return found


def quoted(name: str) -> str:
    """A column name as Spark SQL reads it: in backticks, its own backticks doubled."""
    return "`" + name.replace("`", "``") + "`"


def is_nanos(dtype: pa.DataType) -> bool:
    """Whether an Arrow type is a nanosecond timestamp."""
    return bool(pa.types.is_timestamp(dtype) and dtype.unit == "ns")  # type: ignore[attr-defined]


# The footer key under which Spark keeps the schema of files it wrote; Spark reads that schema
# (timestamp_ntz, intervals, collations) instead of converting the Parquet types.
_SPARK_ROW_METADATA = b"org.apache.spark.sql.parquet.row.metadata"
# Largest decimal precision Spark takes per physical type (its makeDecimalType checks).
_DECIMAL_DIGITS = {"INT32": 9, "INT64": 18}


def _decimal_digits(length: int) -> int:
    """Digits a FIXED_LEN_BYTE_ARRAY of ``length`` bytes holds (Spark's maxPrecisionForBytes)."""
    return math.floor(math.log10(2 ** (8 * length - 1) - 1)) if length > 0 else 0


def _leaf_type(column: Any, logical: dict[str, Any]) -> DataType | None:
    """The Spark type Spark infers for a flat Parquet column, for the plain types only.

    Matches Spark's Parquet schema converter under the settings the session forces
    (:mod:`offline_store.spark_session`): naive timestamps read as timestamps, nanosecond
    timestamps as longs. ``None`` for anything else (unsigned integers, INT96, times, a
    logical type its converted type contradicts, ...), which Spark then infers itself.
    """
    from pyspark.sql import types as T

    physical, converted = column.physical_type, column.converted_type
    kind = logical.get("Type", "None")
    if kind == "Decimal":
        precision, scale = int(logical["precision"]), int(logical["scale"])
        digits = _DECIMAL_DIGITS.get(physical)
        if physical == "FIXED_LEN_BYTE_ARRAY":
            digits = min(38, _decimal_digits(column.length))
        plain = digits is not None and 1 <= precision <= digits and 0 <= scale <= precision
        ok = plain and converted in ("DECIMAL", "NONE")
        return T.DecimalType(precision, scale) if ok else None
    width = logical.get("bitWidth") if logical.get("isSigned") else None  # unsigned: Spark's
    detail = {"Int": width, "Timestamp": logical.get("timeUnit")}.get(kind)
    # (physical, logical, detail) -> the Spark type and the converted type that agrees with it
    # (parquet-mr, which Spark reads with, believes the converted type when the two differ).
    known: dict[tuple[str, str, Any], tuple[Callable[[], DataType], str]] = {
        ("BOOLEAN", "None", None): (T.BooleanType, "NONE"),
        ("INT32", "None", None): (T.IntegerType, "NONE"),
        ("INT64", "None", None): (T.LongType, "NONE"),
        ("FLOAT", "None", None): (T.FloatType, "NONE"),
        ("DOUBLE", "None", None): (T.DoubleType, "NONE"),
        ("BYTE_ARRAY", "None", None): (T.BinaryType, "NONE"),
        ("BYTE_ARRAY", "String", None): (T.StringType, "UTF8"),
        ("INT32", "Date", None): (T.DateType, "DATE"),
        ("INT32", "Int", 8): (T.ByteType, "INT_8"),
        ("INT32", "Int", 16): (T.ShortType, "INT_16"),
        ("INT32", "Int", 32): (T.IntegerType, "INT_32"),
        ("INT64", "Int", 64): (T.LongType, "INT_64"),
        ("INT64", "Timestamp", "milliseconds"): (T.TimestampType, "TIMESTAMP_MILLIS"),
        ("INT64", "Timestamp", "microseconds"): (T.TimestampType, "TIMESTAMP_MICROS"),
        # spark.sql.legacy.parquet.nanosAsLong
        ("INT64", "Timestamp", "nanoseconds"): (T.LongType, "NONE"),
    }
    found = known.get((physical, kind, detail))
    if found is None or converted not in (found[1], "NONE"):
        return None
    return found[0]()


def footer_schema(path: str, binary_as_string: bool = False) -> tuple[StructType, set[str]] | None:
    """The schema Spark infers for one Parquet file, from its footer, and its nanosecond columns.

    Args:
        path: a local Parquet file.
        binary_as_string: the session's ``spark.sql.parquet.binaryAsString``.

    Returns:
        The schema (every column nullable, as Spark reads Parquet) and the
        ``TIMESTAMP(NANOS)`` columns, or ``None`` when a column is not a plain flat type, the
        file was written by Spark (whose own stored schema Spark reads) or the footer cannot
        be read (Spark then infers the schema and reports errors itself).
    """
    from pyspark.sql import types as T

    try:
        metadata = pq.ParquetFile(path).metadata
    except (OSError, pa.ArrowInvalid):
        return None
    if _SPARK_ROW_METADATA in (metadata.metadata or {}):
        return None
    columns = metadata.schema
    fields, nanos = [], set()
    for i in range(len(columns)):
        column = columns.column(i)
        if column.path != column.name or column.max_repetition_level:
            return None  # nested or repeated
        logical = json.loads(column.logical_type.to_json())
        spark_type = _leaf_type(column, logical)
        if isinstance(spark_type, T.BinaryType) and binary_as_string:
            spark_type = T.StringType()
        if spark_type is None:
            return None
        if logical.get("Type") == "Timestamp" and isinstance(spark_type, T.LongType):
            nanos.add(column.name)
        fields.append(T.StructField(column.name, spark_type, nullable=True))
    return T.StructType(fields), nanos


def spark_type(value_type: ValueType | None) -> DataType:
    """The Spark type a partition column of a declared Feast type is read as (string for a
    type :data:`offline_store.partitions.DUCKDB_TYPES` does not know, or none declared)."""
    from pyspark.sql import types as T

    known: dict[ValueType, Callable[[], DataType]] = {
        ValueType.INT64: T.LongType,
        ValueType.INT32: T.IntegerType,
        ValueType.DOUBLE: T.DoubleType,
        ValueType.FLOAT: T.FloatType,
        ValueType.BOOL: T.BooleanType,
        # The session's time zone is UTC (offline_store.spark_session).
        ValueType.UNIX_TIMESTAMP: T.TimestampType,
    }
    make = known.get(value_type) if value_type is not None else None
    return make() if make is not None else T.StringType()


def with_partition_types(
    schema: StructType, partitions: list[str], types: Mapping[str, ValueType]
) -> StructType:
    """``schema`` (the files' columns, or a whole read's) with each partition column typed
    by :func:`spark_type`; partition columns it lacks are added after its columns, outermost
    folder first, as Spark adds them."""
    from pyspark.sql import types as T

    fields = [
        T.StructField(f.name, spark_type(types.get(f.name)), nullable=True)
        if f.name in partitions
        else f
        for f in schema.fields
    ]
    have = set(schema.names)
    fields += [
        T.StructField(n, spark_type(types.get(n)), nullable=True)
        for n in partitions
        if n not in have
    ]
    return T.StructType(fields)


def from_nanos(frame: DataFrame, columns: set[str]) -> DataFrame:
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType

    for name, dtype in [(f.name, f.dataType) for f in frame.schema.fields]:
        if name in columns and isinstance(dtype, LongType):
            micros = F.expr(round_nanos_sql(quoted(name)))
            frame = frame.withColumn(name, F.timestamp_micros(micros))
    return frame


def round_nanos_sql(ns: str) -> str:
    """Nanoseconds to microseconds as DuckDB casts ``TIMESTAMP_NS``: half away from zero.

    ``div`` truncates toward zero, so shifting by half a unit away from zero first rounds
    half away from zero, in exact integer arithmetic.
    """
    return f"CASE WHEN {ns} >= 0 THEN ({ns} + 500) div 1000 ELSE ({ns} - 500) div 1000 END"


def shared_schema(files: list[str], binary_as_string: bool) -> tuple[StructType, set[str]] | None:
    """The footer schema the files all have (:func:`footer_schema`), or None when they differ:
    Spark's schema merge of identical schemas is that schema, and it would read every
    footer in a job."""
    first = footer_schema(files[0], binary_as_string)
    for other in files[1:]:
        if first is None or footer_schema(other, binary_as_string) != first:
            return None
    return first
