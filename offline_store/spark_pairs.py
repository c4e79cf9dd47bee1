"""The point-in-time join on Spark by broadcast pairs, for entity rows small enough to ship.

Same answer as :mod:`offline_store.spark_join` (its module docstring has the semantics); a
different plan, chosen by :func:`choose_strategy`:

1. The entity rows' join keys, row id and time are broadcast to every task that scans a view's
   source. Each feature row meets the entity rows with its keys in a hash join whose condition
   keeps the candidates, ``event_ts <= t`` and (when every view of the scan has a TTL)
   ``event_ts >= t - longest TTL``: (row id, order key, packed values) pairs.
2. The pairs of every view, and the entity rows themselves (their columns packed in one
   struct), go through one shuffle straight to the output partition of their row id (the
   partitions of :func:`offline_store.spark_join.in_input_order`) and are grouped there by row
   id: per view ``max_by(values, order key)``, where the order key is the same (event_ts,
   created_ts, file, row) the window plan sorts by, so it picks the same row, ties included.
   A pair of another scan has a null order key for this view, which ``max_by`` skips.
3. Each view's TTL is applied to its match as in the window plan; a sort within each partition
   puts the rows in input order.

The feature rows are never shuffled or sorted, only their candidates (with a TTL, usually
fewer than the entity rows), where the window plan shuffles and sorts every feature row with
the entity rows. The price is the hash join's: each feature row is compared with every entity
row of its key, and each candidate is shuffled. So ``auto`` only chooses it when every view has
a TTL (without one, a feature row is a candidate for every later entity row of its key) and no
key value has more than :data:`MAX_ROWS_PER_KEY` entity rows, which bounds the candidates by
that many times the feature rows however dense they are.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from offline_store.spark_join import (
    ENTITY_TS,
    FEAT,
    MATCH,
    O_CR,
    O_TS,
    ROW_ID,
    RowOrder,
    SparkView,
    column,
    feature_rows,
    key_groups,
    micros,
    output_partition,
    result_columns,
    shared_scans,
    view_outputs,
)
from offline_store.spark_sources import order_columns

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

JoinStrategy = Literal["auto", "window", "broadcast"]
MAX_ENTITY_ROWS = 1_000_000
"""Most entity rows ``auto`` broadcasts (their keys, row id and time: ~24 MB at one long key)."""
MAX_ROWS_PER_KEY = 16
"""Most entity rows with one value of a view's join keys that ``auto`` broadcasts."""
_ENTITY = "__ent"
_PARTITION = "__partition"
_ORD = "__ord"
_PAIR_ID, _PAIR_TS = "__pair_id", "__pair_ts"


def max_rows_per_key(table: pa.Table, keys: list[str]) -> int:
    """The most rows of ``table`` that share one value of ``keys`` (all rows without keys)."""
    if not keys or table.num_rows == 0:
        return int(table.num_rows)
    try:
        counts = table.select(keys).group_by(keys).aggregate([([], "count_all")])
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return int(table.num_rows)  # a key type Arrow cannot group: as if every row shared it
    return int(pc.max(counts.column("count_all")).as_py())


def choose_strategy(
    strategy: JoinStrategy, views: list[SparkView], local: pa.Table | None
) -> Literal["window", "broadcast"]:
    """The plan to run: the configured one, or for ``auto`` broadcast pairs when the entity
    rows are local (pandas or Arrow), at most :data:`MAX_ENTITY_ROWS`, every view has join
    keys and a TTL, and no key value has more than :data:`MAX_ROWS_PER_KEY` entity rows."""
    if strategy != "auto":
        return strategy
    if local is None or not 0 < local.num_rows <= MAX_ENTITY_ROWS:
        return "window"
    if any(not v.join_keys or v.ttl_micros <= 0 for v in views):
        return "window"
    for group in key_groups(views):
        keys = [entity for entity, _ in group[0][1].join_keys]
        if max_rows_per_key(local, keys) > MAX_ROWS_PER_KEY:
            return "window"
    return "broadcast"


def _pairs(
    entities: DataFrame,
    scan: list[tuple[int, SparkView]],
    entity_types: dict[str, Any],
    scan_index: int,
    min_ts: datetime | None,
    max_ts: datetime | None,
) -> DataFrame:
    """(row id, ``__ord<scan>``, ``__feat<i>`` per view) for every candidate of the scan."""
    from pyspark.sql import functions as F

    view = scan[0][1]
    keys = [entity for entity, _ in view.join_keys]
    probes = F.broadcast(
        entities.select(
            *[column(k) for k in keys],
            F.col(ROW_ID).alias(_PAIR_ID),
            micros(F.col(ENTITY_TS)).alias(_PAIR_TS),
        )
    )
    rows = feature_rows(scan, entity_types, min_ts, max_ts)
    event = micros(F.col(O_TS))
    candidate = event <= F.col(_PAIR_TS)
    ttls = [v.ttl_micros for _, v in scan]
    if min(ttls) > 0:  # older than every TTL of the scan: never kept, so never compared
        candidate = candidate & (event >= F.col(_PAIR_TS) - F.lit(max(ttls)))
    order = F.struct(F.col(O_TS), F.col(O_CR), *[F.col(c) for c in order_columns(view.frame)])
    # A view without entities: every entity row is a probe of every feature row.
    paired = rows.join(probes, on=keys, how="inner") if keys else rows.crossJoin(probes)
    return paired.where(candidate).select(
        F.col(_PAIR_ID).alias(ROW_ID),
        order.alias(f"{_ORD}{scan_index}"),
        *[F.col(f"{FEAT}{index}") for index, _ in scan],
    )


def pit_join_pairs(
    entities: DataFrame,
    views: list[SparkView],
    entity_columns: list[str],
    timestamp_column: str,
    *,
    min_ts: datetime | None,
    max_ts: datetime | None,
    order: RowOrder,
) -> DataFrame:
    """The point-in-time join of ``entities`` by broadcast pairs; arguments and result as
    :func:`offline_store.spark_join.pit_join`."""
    from pyspark.sql import functions as F

    entity_types = {f.name: f.dataType for f in entities.schema.fields}
    packed = [c for c in entities.columns if c != ROW_ID]
    rows = entities.select(F.col(ROW_ID), F.struct(*[column(c) for c in packed]).alias(_ENTITY))
    scan_of: dict[int, int] = {}
    for group in key_groups(views):
        for scan in shared_scans(group):
            scan_index = len(set(scan_of.values()))
            scan_of.update({index: scan_index for index, _ in scan})
            pairs = _pairs(entities, scan, entity_types, scan_index, min_ts, max_ts)
            rows = rows.unionByName(pairs, allowMissingColumns=True)
    # One shuffle, straight to the output partition of each row id (in input order).
    rows = rows.withColumn(_PARTITION, output_partition(order))
    grouped = rows.repartition(order.partitions, F.col(_PARTITION)).groupBy(_PARTITION, ROW_ID)
    matched = grouped.agg(
        F.first(_ENTITY, ignorenulls=True).alias(_ENTITY),
        *[
            F.max_by(f"{FEAT}{index}", f"{_ORD}{scan_of[index]}").alias(f"{MATCH}{index}")
            for index in range(len(views))
        ],
    )
    joined = matched.select(
        F.col(ROW_ID),
        *[F.col(_ENTITY).getField(c).alias(c) for c in packed],
        *[out for index, view in enumerate(views) for out in view_outputs(index, view)],
    )
    return joined.sortWithinPartitions(ROW_ID).select(
        *result_columns(views, entity_columns, timestamp_column)
    )
