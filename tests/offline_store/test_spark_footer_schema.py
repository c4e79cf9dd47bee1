"""Local Parquet sources are read with the schema from their footers: Spark's own answer, no job.

:func:`offline_store.spark_sources.footer_schema` stands in for Spark's schema inference (a Spark
job per read). These tests write files the ways users write them (pandas defaults, pyarrow
options, legacy INT96, nested columns, awkward names, Spark's own files, pushed parts) and
check, with Spark itself, that the footer's schema is exactly the inferred (or merged) one and
reads exactly the same rows, that what it does not handle is left to Spark, and that reading a
source then runs no Spark job.
"""

from __future__ import annotations

import decimal
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from foundation.errors import InvalidRequestError
from offline_store.listing import source_files
from offline_store.spark_schema import footer_schema, from_nanos, nanosecond_columns
from offline_store.spark_sources import file_read, read_parquet
from offline_store.writes import write_batch

N = 6


def _pandas_plain() -> pd.DataFrame:
    """Every plain type pandas writes, each with a null where the type allows one."""
    stamps = pd.to_datetime(["2024-01-01 00:00:00.123456789", None] * (N // 2))
    return pd.DataFrame(
        {
            "i8": np.arange(N, dtype="int8"),
            "i16": np.arange(N, dtype="int16"),
            "i32": np.arange(N, dtype="int32"),
            "i64": pd.array([1, None] * (N // 2), dtype="Int64"),
            "f32": np.linspace(0, 1, N, dtype="float32"),
            "f64": [0.5, None] * (N // 2),
            "flag": [True, False] * (N // 2),
            "text": ["a", None] * (N // 2),
            "category": pd.Categorical(["x", "y"] * (N // 2)),
            "blob": [b"\x00\xff", None] * (N // 2),
            "day": [date(2024, 2, 29), None] * (N // 2),
            "naive_ns": stamps,
            "utc_ns": stamps.tz_localize("UTC"),
            "paris_ns": stamps.tz_localize("Europe/Paris"),
            "money": [decimal.Decimal("12.34"), None] * (N // 2),
            "odd name.with `dots`": range(N),
        }
    )


def _write(kind: str, path: Path) -> None:
    frame = _pandas_plain()
    if kind == "pandas_defaults":
        frame.to_parquet(path)
    elif kind == "pandas_with_index":
        frame.set_index("text").to_parquet(path)
    elif kind == "micro_and_milli":
        table = pa.Table.from_pandas(frame, preserve_index=False)
        pq.write_table(table, path, coerce_timestamps="us", allow_truncated_timestamps=True)
        pq.write_table(
            table, path.with_suffix(".ms"), coerce_timestamps="ms", allow_truncated_timestamps=True
        )
        path.with_suffix(".ms").replace(path)
    elif kind == "decimals_as_integers":
        table = pa.Table.from_pandas(frame, preserve_index=False).append_column(
            "wide",
            pa.array([decimal.Decimal("1234567890.12"), None] * (N // 2), pa.decimal128(18, 2)),
        )
        pq.write_table(table, path, store_decimal_as_integer=True)
        kinds = pq.ParquetFile(path).metadata.schema
        assert {kinds.column(i).physical_type for i in (14, 16)} == {"INT32", "INT64"}
    elif kind == "parquet_1_0":
        # The older format: no nanoseconds (microseconds in the file) and converted types.
        for name in ("naive_ns", "utc_ns", "paris_ns"):
            frame[name] = frame[name].dt.floor("us")
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, version="1.0")
    else:
        raise AssertionError(kind)


def _leftover(kind: str, path: Path) -> None:
    """Files with a column type the footer schema leaves to Spark."""
    base = {"k": pa.array([1, 2, None], pa.int64())}
    if kind == "unsigned":
        extra = {"u": pa.array([1, 2, 3], pa.uint32())}
    elif kind == "int96":
        extra = {"t": pa.array([datetime(2024, 1, 1)] * 3, pa.timestamp("ns"))}
    elif kind == "nested":
        extra = {"s": pa.array([{"a": 1}, None, {"a": 3}], pa.struct([("a", pa.int64())]))}
    elif kind == "list":
        extra = {"l": pa.array([[1], [], None], pa.list_(pa.int64()))}
    elif kind == "fixed_binary":
        extra = {"b": pa.array([b"ab", b"cd", None], pa.binary(2))}
    else:
        raise AssertionError(kind)
    pq.write_table(pa.table({**base, **extra}), path, use_deprecated_int96_timestamps=True)


def _rows(frame: Any) -> list[tuple[Any, ...]]:
    return sorted((tuple(r) for r in frame.collect()), key=repr)


KINDS = ["pandas_defaults", "pandas_with_index", "micro_and_milli", "decimals_as_integers"]


@pytest.mark.parametrize("kind", [*KINDS, "parquet_1_0"])
def test_footer_schema_is_what_spark_infers_and_reads_the_same_rows(
    spark: Any, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "data.parquet"
    _write(kind, path)
    known = footer_schema(str(path))
    assert known is not None, "plain columns: the footer gives the schema"
    schema, nanos = known
    inferred = spark.read.parquet(str(path))
    given = spark.read.schema(schema).parquet(str(path))
    assert given.schema == inferred.schema
    assert _rows(given) == _rows(inferred)
    stored = pq.ParquetFile(path).schema_arrow
    physical_nanos = kind in ("pandas_defaults", "pandas_with_index", "decimals_as_integers")
    stamps = {f.name for f in stored if pa.types.is_timestamp(f.type)}
    assert nanos == (stamps if physical_nanos else set())


@pytest.mark.parametrize("kind", ["unsigned", "int96", "nested", "list", "fixed_binary"])
def test_other_column_types_are_left_to_spark(spark: Any, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "data.parquet"
    _leftover(kind, path)
    assert footer_schema(str(path)) is None
    inferred = spark.read.parquet(str(path))
    assert _rows(read_parquet(spark, file_read(str(path))).drop("__o_rn")) == _rows(inferred)


def test_binary_as_string_follows_the_session(spark: Any, tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"b": pa.array([b"ab", None], pa.binary())}), path)
    spark.conf.set("spark.sql.parquet.binaryAsString", " TRUE ")  # Spark's way to read it
    try:
        inferred = spark.read.parquet(str(path))
        assert footer_schema(str(path), binary_as_string=True) is not None
        assert read_parquet(spark, file_read(str(path))).drop("__o_rn").schema == inferred.schema
        assert _rows(read_parquet(spark, file_read(str(path))).drop("__o_rn")) == _rows(inferred)
    finally:
        spark.conf.unset("spark.sql.parquet.binaryAsString")


def test_reading_a_one_file_source_runs_no_spark_job(spark: Any, tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    _write("pandas_defaults", path)
    tracker = spark.sparkContext.statusTracker()
    before = set(tracker.getJobIdsForGroup())
    frame = read_parquet(spark, file_read(str(path)))
    assert set(tracker.getJobIdsForGroup()) == before
    # Nanosecond columns come back as microsecond timestamps, rounded as DuckDB rounds them.
    got = frame.select("naive_ns", "utc_ns").collect()[0]
    assert got.naive_ns == got.utc_ns.replace(tzinfo=None) == datetime(2024, 1, 1, 0, 0, 0, 123457)


def test_files_written_by_spark_keep_the_schema_spark_stored(spark: Any, tmp_path: Path) -> None:
    """Spark reads the schema it stored in its own files (timestamp_ntz, intervals), not the
    Parquet types: such files are left to Spark."""
    frame = spark.sql(
        "SELECT 1L AS k, TIMESTAMP_NTZ'2024-01-01 10:00:00' AS naive, "
        "INTERVAL '1' DAY AS span, X'00FF' AS blob"
    )
    frame.coalesce(1).write.parquet(str(tmp_path / "out"))
    (part,) = (tmp_path / "out").glob("part-*.parquet")
    assert footer_schema(str(part)) is None
    read = read_parquet(spark, file_read(str(part))).drop("__o_rn")
    assert read.schema == spark.read.parquet(str(part)).schema
    assert [(f.name, f.dataType) for f in read.schema] == [
        (f.name, f.dataType) for f in frame.schema
    ]
    assert _rows(read) == _rows(frame)


def test_decimals_spark_refuses_are_refused_as_spark_refuses_them(
    spark: Any, tmp_path: Path
) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"d": pa.array([decimal.Decimal("1.25")], pa.decimal256(50, 2))}), path)
    assert footer_schema(str(path)) is None
    with pytest.raises(InvalidRequestError, match="Spark cannot read the offline source"):
        read_parquet(spark, file_read(str(path)))


def _merged(spark: Any, paths: list[str]) -> Any:
    """What the store read before footer schemas: Spark's merge, then nanoseconds turned back
    into timestamps."""
    return from_nanos(
        spark.read.option("mergeSchema", "true").parquet(*paths), nanosecond_columns(paths)
    )


def test_pushed_parts_read_with_one_schema_in_push_order_and_no_job(
    spark: Any, tmp_path: Path
) -> None:
    path = tmp_path / "rates.parquet"
    base = _pandas_plain()
    base.to_parquet(path)
    pushed = pa.Table.from_pandas(base.iloc[:2], preserve_index=False)
    write_batch(str(path), pushed)
    write_batch(str(path), pushed.slice(1))
    paths = source_files(str(path))
    assert len(paths) == 3  # the file and its two parts
    tracker = spark.sparkContext.statusTracker()
    before = set(tracker.getJobIdsForGroup())
    frame = read_parquet(spark, file_read(str(path)))
    assert set(tracker.getJobIdsForGroup()) == before
    merged = _merged(spark, paths)
    assert frame.drop("__o_f", "__o_rn").schema == merged.schema
    # File then row order: the file's rows, then each push in the order it landed.
    ordered = [tuple(r)[:-2] for r in frame.orderBy("__o_f", "__o_rn").collect()]
    rows = [tuple(r) for r in _merged(spark, [str(path)]).collect()]  # one file, in its order
    assert ordered == rows + rows[:2] + rows[1:2]
    assert _rows(frame.drop("__o_f", "__o_rn")) == _rows(merged)


def test_files_with_different_schemas_are_merged_by_spark(spark: Any, tmp_path: Path) -> None:
    pq.write_table(pa.table({"k": pa.array([1], pa.int64())}), tmp_path / "a.parquet")
    pq.write_table(
        pa.table({"k": pa.array([2], pa.int64()), "x": pa.array([0.5])}), tmp_path / "b.parquet"
    )
    paths = [str(tmp_path / "*.parquet")]
    frame = read_parquet(spark, file_read(paths[0]))
    assert frame.drop("__o_f", "__o_rn").schema == _merged(spark, paths).schema
    assert sorted(tuple(r) for r in frame.select("k", "x").collect()) == [(1, None), (2, 0.5)]
