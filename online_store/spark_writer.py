"""What a Spark executor runs to write its partition to Redis, importable without Feast.

:class:`online_store.spark.SparkMaterializationEngine` hands Spark the function
:func:`partition_writer` returns (``mapInArrow``); Spark pickles it by reference to this
module, so every Python worker imports this module and what it imports. That is the write
path (writer, byte codec, keys, statistics) and nothing of Feast: importing Feast costs a
worker seconds and a few hundred MB. ``tests/online_store/test_spark_writer.py`` keeps it so.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from foundation.statistics import TableProfiler
from online_store.connection import make_client
from online_store.write_plan import WriteSpec
from online_store.writer import write_batches

STATS_SCHEMA = pa.schema(
    [
        ("rows_in", pa.int64()),
        ("rows_written", pa.int64()),
        ("newest", pa.int64()),
        ("profile", pa.binary()),
    ]
)
STATS_DDL = "rows_in long, rows_written long, newest long, profile binary"


def partition_writer(
    *,
    target: str,
    cluster: bool,
    timeout: float,
    spec: WriteSpec,
    project: str,
    key_ttl_seconds: int | None,
    chunk_rows: int,
    accumulator: Any,
) -> Any:
    """The function each executor runs over its partition's Arrow batches (``mapInArrow``).

    It opens its own Redis client, writes the batches with :func:`write_batches` and yields
    one stats row: rows in, rows written, newest event time written (epoch microseconds) and
    the statistics of the partition's feature columns (a pickled
    :class:`~foundation.statistics.TableProfiler`, merged on the driver).
    """

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        client = make_client(target, cluster=cluster, timeout=timeout)
        newest: list[int] = []
        profiler = TableProfiler(spec.features)

        def watched() -> Iterator[pa.RecordBatch]:
            for batch in profiler.watch(batches):
                if batch.num_rows:
                    top = pc.max(batch.column(spec.timestamp_field)).cast(pa.int64()).as_py()
                    if top is not None:
                        newest.append(top)
                yield batch

        try:
            stats = write_batches(
                client,
                spec,
                watched(),
                project=project,
                key_ttl_seconds=key_ttl_seconds,
                chunk_rows=chunk_rows,
                progress=accumulator.add,
            )
        finally:
            client.close()
        yield pa.RecordBatch.from_pylist(
            [
                {
                    "rows_in": stats.rows_in,
                    "rows_written": stats.rows_written,
                    "newest": max(newest) if newest else None,
                    "profile": pickle.dumps(profiler),
                }
            ],
            schema=STATS_SCHEMA,
        )

    return write
