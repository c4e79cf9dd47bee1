"""Entity rows of a Spark point-in-time request: loaded, numbered in input order and checked.

An entity source is a pandas DataFrame, an Arrow table, a Spark DataFrame, a Parquet path or a
Spark SQL query (each feature view's source is visible as a temp view named after the view and
after its batch source). The rows get ``__row_id`` (input order) and ``__entity_ts`` (the event
time as a UTC timestamp), and the same checks as the DuckDB store's make the same 4xx errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from foundation.errors import InvalidRequestError, InvalidTimestampError
from offline_store.checks import check_columns
from offline_store.entities import DEFAULT_TIMESTAMP_COLUMN, is_sql
from offline_store.spark_join import ENTITY_TS, ROW_ID, SparkView, raw_column
from offline_store.spark_sources import is_nanos

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@dataclass(frozen=True, slots=True)
class SparkEntities:
    """Loaded entity rows.

    Attributes:
        frame: the rows with ``__row_id`` and ``__entity_ts``.
        columns: the input columns, in input order.
        timestamp_column: the column used as the entity event time.
        min_ts: earliest entity time (UTC), ``None`` without rows.
        max_ts: latest entity time (UTC).
    """

    frame: Any
    columns: list[str]
    timestamp_column: str
    min_ts: datetime | None
    max_ts: datetime | None


def _input_frame(spark: SparkSession, source: Any) -> DataFrame:
    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F

    if isinstance(source, pd.DataFrame):
        try:
            source = pa.Table.from_pandas(source, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InvalidTimestampError(
                f"entity DataFrame cannot be converted to Arrow ({exc}); a column mixes "
                "types, often naive and timezone-aware timestamps: make them all one kind",
            ) from exc
    if isinstance(source, pa.Table):
        source = micro_timestamps(source)
        numbered = source.append_column(ROW_ID, pa.array(range(source.num_rows), pa.int64()))
        frame: DataFrame = spark.createDataFrame(numbered)
        return frame
    if isinstance(source, DataFrame):
        frame = source
    elif isinstance(source, (str, Path)):
        text = str(source)
        try:
            if isinstance(source, str) and is_sql(text):
                frame = spark.sql(text)
            else:
                if not ("://" in text or os.path.exists(text)):
                    raise InvalidRequestError(f"entity path {text!r} does not exist")
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
    return frame.withColumn(ROW_ID, F.monotonically_increasing_id())


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


def load_entities(spark: SparkSession, source: Any) -> SparkEntities:
    """Load, number and check entity rows (one Spark action: the time range and bad times).

    Raises:
        InvalidRequestError: the source cannot be read.
        InvalidTimestampError: no usable timestamp column, null or unparseable timestamps.
    """
    from pyspark.sql import functions as F

    frame = _input_frame(spark, source)
    ts_col = _pick_timestamp_column(frame)
    raw = F.col(f"`{ts_col}`")
    frame = frame.withColumn(ENTITY_TS, raw.try_cast("timestamp"))
    stats = frame.agg(
        F.count(F.when(raw.isNull(), 1)).alias("nulls"),
        F.count(F.when(raw.isNotNull() & F.col(ENTITY_TS).isNull(), 1)).alias("bad"),
        F.min(ENTITY_TS).alias("lo"),
        F.max(ENTITY_TS).alias("hi"),
    ).collect()[0]
    if stats["nulls"] or stats["bad"]:
        raise InvalidTimestampError(
            f"entity column {ts_col!r} has {stats['nulls']} null and {stats['bad']} unparseable "
            "timestamps; every entity row needs a time (ISO 8601 strings or datetimes; naive "
            "means UTC)",
            column=ts_col,
        )
    columns = [c for c in frame.columns if c not in (ROW_ID, ENTITY_TS)]
    return SparkEntities(frame, columns, ts_col, stats["lo"], stats["hi"])


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
