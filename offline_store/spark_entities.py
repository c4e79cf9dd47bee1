"""Entity rows of a Spark point-in-time request: loaded, numbered in input order and checked.

An entity source is a pandas DataFrame, an Arrow table, a Spark DataFrame, a Parquet path or a
Spark SQL query (each feature view's source is visible as a temp view named after the view and
after its batch source). The rows get ``__row_id`` (input order) and ``__entity_ts`` (the event
time as a UTC timestamp), and the same checks as the DuckDB store's make the same 4xx errors.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from foundation.errors import InvalidRequestError, InvalidTimestampError
from offline_store.checks import check_columns, check_entity_columns
from offline_store.entities import DEFAULT_TIMESTAMP_COLUMN, entity_table, is_sql
from offline_store.listing import is_remote
from offline_store.spark_join import (
    ENTITY_TS,
    PARTITION_SHIFT,
    ROW_ID,
    RowOrder,
    SparkView,
    raw_column,
)
from offline_store.spark_schema import is_nanos, quoted
from offline_store.spark_sources import ORDER_FILE, ORDER_ROW, file_read, read_parquet

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_LOCAL_RELATION_THRESHOLD = "spark.sql.execution.arrow.localRelationThreshold"
_THRESHOLD_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class SparkEntities:
    """Loaded entity rows.

    Attributes:
        frame: the rows with ``__row_id`` and ``__entity_ts``.
        columns: the input columns, in input order.
        timestamp_column: the column used as the entity event time.
        min_ts: earliest entity time (UTC), ``None`` without rows.
        max_ts: latest entity time (UTC).
        order: how ``__row_id`` splits into ordered output partitions.
        local: the rows as an Arrow table when they came from pandas or Arrow (the driver
            has them anyway), else ``None``; the join strategy counts their keys.
    """

    frame: Any
    columns: list[str]
    timestamp_column: str
    min_ts: datetime | None
    max_ts: datetime | None
    order: RowOrder
    local: pa.Table | None = None


def _local_table(source: Any) -> pa.Table | None:
    """pandas and Arrow entity rows as an Arrow table in microseconds; ``None`` for others."""
    if isinstance(source, pd.DataFrame):
        source = entity_table(source)
    return micro_timestamps(source) if isinstance(source, pa.Table) else None


def _input_frame(spark: SparkSession, source: Any) -> tuple[DataFrame, bool]:
    """The rows with ``__row_id``, and whether the ids are dense (0..n-1 in input order).

    The input's column names are checked (:func:`check_entity_columns`) before the row id
    joins them, which would replace a column of that name.
    """
    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F

    if isinstance(source, pa.Table):
        check_entity_columns(source.column_names)
        numbered = source.append_column(ROW_ID, pa.array(range(source.num_rows), pa.int64()))
        return _distributed_frame(spark, numbered), True
    if isinstance(source, DataFrame):
        frame = source
    elif isinstance(source, (str, Path)):
        text = str(source)
        try:
            if isinstance(source, str) and is_sql(text):
                frame = spark.sql(text)
            elif not is_remote(text):
                return _local_parquet(spark, text), True
            else:
                frame = spark.read.parquet(text)
        except InvalidRequestError:
            raise
        except Exception as exc:  # ParseException, AnalysisException
            raise InvalidRequestError(
                f"cannot read the entity rows: {str(exc).splitlines()[0]}; check the SQL or "
                "the Parquet path",
            ) from exc
    else:
        raise InvalidRequestError(
            f"unsupported entity source of type {type(source).__name__}; pass a pandas "
            "DataFrame, a pyarrow Table, a Spark DataFrame, a Parquet path or a Spark SQL query",
        )
    check_entity_columns(frame.columns)
    return frame.withColumn(ROW_ID, F.monotonically_increasing_id()), False


def _distributed_frame(spark: SparkSession, table: pa.Table) -> DataFrame:
    """``table`` as a DataFrame whose rows the executors convert, however small it is.

    Below ``spark.sql.execution.arrow.localRelationThreshold`` (48 MB by default) Spark would
    put the rows in the plan as a local relation, and every analysis and optimizer pass over
    each plan built on them would walk them: 100k entity rows made a warm training set 15-20%
    slower (docs/offline-store.md, Spark figures). The setting is the session's, read when a
    DataFrame is made from Arrow data, so it is 0 for this call and then put back, under a
    lock: two builds at once would otherwise each put back the other's 0.
    """
    with _THRESHOLD_LOCK:
        previous = spark.conf.get(_LOCAL_RELATION_THRESHOLD)
        spark.conf.set(_LOCAL_RELATION_THRESHOLD, "0")
        try:
            return spark.createDataFrame(table)
        finally:
            if previous is None:
                spark.conf.unset(_LOCAL_RELATION_THRESHOLD)
            else:
                spark.conf.set(_LOCAL_RELATION_THRESHOLD, previous)


def _local_parquet(spark: SparkSession, path: str) -> DataFrame:
    """Entity rows from local Parquet, read as the DuckDB store reads them: the files
    :mod:`offline_store.listing` lists, in that order, nanosecond times rounded as DuckDB
    rounds them (pandas writes nanoseconds), numbered 0..n-1 in that order (each row's
    file's offset, from the footers' row counts, plus its row in the file)."""
    from pyspark.sql import functions as F

    read = file_read(path, entity=True)
    frame = read_parquet(spark, read)
    offsets = [0]
    for file in (read.files or [])[:-1]:
        offsets.append(offsets[-1] + pq.ParquetFile(file).metadata.num_rows)
    start = F.lit(0).cast("long")
    if ORDER_FILE in frame.columns:
        listed = ", ".join(f"{o}L" for o in offsets)
        start = F.expr(f"element_at(array({listed}), CAST({ORDER_FILE} AS INT) + 1)")
    columns = [c for c in frame.columns if c not in (ORDER_FILE, ORDER_ROW)]
    check_entity_columns(columns)
    return frame.select(
        *[F.col(quoted(c)) for c in columns], (start + F.col(ORDER_ROW)).alias(ROW_ID)
    )


def micro_timestamps(table: pa.Table) -> pa.Table:
    """Nanosecond timestamp columns rounded to microseconds as DuckDB rounds them.

    Spark holds microseconds; left to itself the Arrow conversion would truncate, and an
    entity time of 1.5 us would then compare differently than in the DuckDB store.
    """
    for i, field in enumerate(table.schema):
        if not is_nanos(field.type):
            continue
        ns = table.column(i).cast(pa.int64()).to_numpy(zero_copy_only=False)
        valid = table.column(i).is_valid().to_numpy(zero_copy_only=False)
        ints = np.where(valid, ns, 0).astype(np.int64)
        # Half away from zero, in integers (numpy's // floors, so work on magnitudes).
        micros = np.sign(ints) * ((np.abs(ints) + 500) // 1000)
        unit = pa.timestamp("us", tz=field.type.tz)  # type: ignore[attr-defined]
        column = pa.array(micros, pa.int64(), mask=~valid).cast(unit)
        table = table.set_column(i, field.with_type(unit), column)
    return table


def _pick_timestamp_column(frame: DataFrame) -> str:
    from pyspark.sql.types import DateType, TimestampNTZType, TimestampType

    names = [f.name for f in frame.schema.fields if f.name != ROW_ID]
    if DEFAULT_TIMESTAMP_COLUMN in names:
        return DEFAULT_TIMESTAMP_COLUMN
    kinds = (DateType, TimestampType, TimestampNTZType)
    candidates = [f.name for f in frame.schema.fields if isinstance(f.dataType, kinds)]
    if len(candidates) == 1:
        return candidates[0]
    raise InvalidTimestampError(
        f"entity rows need a column named {DEFAULT_TIMESTAMP_COLUMN!r} with the time of each "
        f"row (found columns {sorted(names)}); rename your timestamp column",
        columns=sorted(names),
    )


def _local_stats(table: pa.Table, ts_col: str) -> dict[str, Any] | None:
    """The time checks and range of local rows with a timestamp column, without a Spark job."""
    column = table.column(ts_col)
    if not pa.types.is_timestamp(column.type):
        return None  # strings and dates: parsed and checked by Spark, as for other sources
    bounds = pc.min_max(column).as_py()
    lo, hi = (
        None if v is None else v if v.tzinfo else v.replace(tzinfo=UTC)
        for v in (bounds["min"], bounds["max"])
    )
    return {"nulls": column.null_count, "bad": 0, "lo": lo, "hi": hi, "rows": table.num_rows}


def load_entities(spark: SparkSession, source: Any) -> SparkEntities:
    """Load, number and check entity rows.

    pandas and Arrow rows with a timestamp column are checked on the driver, where they
    already are; other sources by one Spark action (the time range and bad times).

    Raises:
        InvalidRequestError: the source cannot be read.
        InvalidTimestampError: no usable timestamp column, null or unparseable timestamps.
    """
    from pyspark.sql import functions as F

    table = _local_table(source)
    frame, dense = _input_frame(spark, source if table is None else table)
    ts_col = _pick_timestamp_column(frame)
    raw = F.col(quoted(ts_col))
    frame = frame.withColumn(ENTITY_TS, raw.try_cast("timestamp"))
    stats = None if table is None else _local_stats(table, ts_col)
    if stats is None:
        stats = (
            frame.agg(
                F.count(F.when(raw.isNull(), 1)).alias("nulls"),
                F.count(F.when(raw.isNotNull() & F.col(ENTITY_TS).isNull(), 1)).alias("bad"),
                F.min(ENTITY_TS).alias("lo"),
                F.max(ENTITY_TS).alias("hi"),
                F.count(F.lit(1)).alias("rows"),
                F.max(F.shiftright(F.col(ROW_ID), PARTITION_SHIFT)).alias("last_partition"),
            )
            .collect()[0]
            .asDict()
        )
    if stats["nulls"] or stats["bad"]:
        raise InvalidTimestampError(
            f"entity column {ts_col!r} has {stats['nulls']} null and {stats['bad']} unparseable "
            "timestamps; every entity row needs a time (ISO 8601 strings or datetimes; naive "
            "means UTC)",
            column=ts_col,
        )
    columns = [c for c in frame.columns if c not in (ROW_ID, ENTITY_TS)]
    if dense:  # row ids 0..n-1
        shuffle = int(spark.conf.get("spark.sql.shuffle.partitions") or 200)
        order = RowOrder.dense(stats["rows"], shuffle, spark.sparkContext.defaultParallelism)
    else:  # monotonically_increasing_id: the input partition in the upper bits
        order = RowOrder.by_input_partition((stats["last_partition"] or 0) + 1)
    return SparkEntities(frame, columns, ts_col, stats["lo"], stats["hi"], order, table)


def _family(dtype: Any) -> str:
    from pyspark.sql.types import DecimalType, FractionalType, IntegralType, StringType

    if isinstance(dtype, IntegralType):
        return "integer"
    if isinstance(dtype, (FractionalType, DecimalType)):
        return "number"
    if isinstance(dtype, StringType):
        return "string"
    return dtype.simpleString()  # type: ignore[no-any-return]


def check_request(views: list[SparkView], entities: SparkEntities) -> None:
    """The DuckDB store's request checks, on Spark schemas (same errors, same messages).

    Raises:
        InvalidEntityError: a join key is missing from the entity rows or is a string on one
            side and a number on the other.
        InvalidRequestError: a source lacks a column, or a feature clashes with an entity column.
    """
    entity = {
        f.name: (_family(f.dataType), _family(f.dataType)) for f in entities.frame.schema.fields
    }
    for view in views:
        source = {
            f.name: (_family(f.dataType), _family(f.dataType))
            for f in view.frame.schema.fields
            if not f.name.startswith("__o_")  # the store's own order columns
        }
        check_columns(view, source, entity, raw_column)
