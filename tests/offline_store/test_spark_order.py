"""Spark training frames come back in entity order without a global sort's sampling pass.

:func:`offline_store.spark_join.in_input_order` sends bucket ``p`` of the entity row ids to
partition ``p`` through Spark's hash partitioner; these tests check that against Spark itself,
over many partitions, for dense ids (pandas and Arrow input) and for ids from
``monotonically_increasing_id`` (Spark input), and end to end on the example repo.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offline_store.spark_join import ROW_ID, RowOrder, _ordered_hash_keys, in_input_order


@pytest.mark.parametrize("partitions", [1, 2, 7, 64, 200])
def test_each_key_lands_in_its_own_partition(spark: Any, partitions: int) -> None:
    from pyspark.sql import functions as F

    keys = _ordered_hash_keys(partitions)
    frame = spark.createDataFrame([(k,) for k in keys], "k long").repartition(partitions, "k")
    where = dict(frame.select("k", F.spark_partition_id().alias("p")).collect())
    assert [where[k] for k in keys] == list(range(partitions))


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    rows=st.integers(min_value=0, max_value=3000),
    max_partitions=st.integers(min_value=1, max_value=40),
    cores=st.integers(min_value=1, max_value=16),
    least=st.integers(min_value=1, max_value=500),
    most=st.integers(min_value=1, max_value=1000),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_dense_ids_come_back_in_order(
    spark: Any, rows: int, max_partitions: int, cores: int, least: int, most: int, seed: int
) -> None:
    from pyspark.sql import functions as F

    order = RowOrder.dense(rows, max_partitions, cores, least_rows=least, most_rows=most)
    assert order.partitions <= max(1, max_partitions)
    shuffled = spark.range(rows).withColumnRenamed("id", ROW_ID).orderBy(F.rand(seed))
    out = in_input_order(shuffled, order)
    assert [r[0] for r in out.collect()] == list(range(rows))
    # Partition p holds bucket p (ids p*size .. p*size+size-1): the rows are spread over the
    # partitions, not funnelled into one.
    size = order.rows_per_partition
    assert size is not None
    where = out.select(ROW_ID, F.spark_partition_id().alias("p")).collect()
    assert all(p == row_id // size for row_id, p in where)


@pytest.mark.parametrize(
    ("rows", "cores", "max_partitions", "partitions"),
    [
        (100_000, 2, 200, 2),  # one partition per core
        (15_000, 8, 200, 2),  # no partition under 10k rows, while there are 10k
        (5_000, 8, 200, 1),
        (0, 8, 200, 1),
        (10_000_000, 2, 200, 50),  # none over 200k rows
        (10_000_000, 2, 8, 8),  # the session's shuffle partitions cap it
        (1_000_000, 64, 200, 64),
    ],
)
def test_dense_partitions_follow_cores_and_size(
    rows: int, cores: int, max_partitions: int, partitions: int
) -> None:
    order = RowOrder.dense(rows, max_partitions, cores)
    assert order.partitions == partitions
    assert order.rows_per_partition is not None
    assert order.partitions * order.rows_per_partition >= rows


def test_spark_input_ids_come_back_in_input_partition_order(spark: Any) -> None:
    from pyspark.sql import functions as F

    source = spark.range(5000).repartition(6).withColumn(ROW_ID, F.monotonically_increasing_id())
    expected = [r["id"] for r in source.orderBy(ROW_ID).collect()]
    assert expected != sorted(expected)  # the input order is not the ids' order
    shuffled = source.orderBy(F.rand(3))
    out = in_input_order(shuffled, RowOrder.by_input_partition(6)).collect()
    assert [r["id"] for r in out] == expected
