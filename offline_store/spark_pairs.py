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
a TTL (without one, a feature row is a candidate for every later entity row of its key) and
entity rows share their key with few others (:data:`MAX_KEY_SHARE`): the many-labels-few-keys
and hot-key shapes stay on the window plan. Measured (``docs/offline-store.md``, Spark figures):
100k entity rows over 10M feature rows 3.3 s against 12.4 s; 1M entity rows, ten per driver,
over the same 10M, 24 s against 19 s, which is why the share is bounded.
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
    shared_scans,
    view_outputs,
)
from offline_store.spark_sources import order_columns

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

JoinStrategy = Literal["auto", "window", "broadcast"]
MAX_ENTITY_ROWS = 1_000_000
"""Most entity rows ``auto`` broadcasts (their keys, row id and time: ~24 MB at one long key)."""
MAX_KEY_SHARE = 4.0
"""Most entity rows an entity row shares its key with, on average, that ``auto`` broadcasts
(:func:`key_share`; a hot key raises it: 1000 rows of one driver among 100k add 10)."""
_ENTITY = "__ent"
_PARTITION = "__partition"
_ORD = "__ord"
_PROBE_KEY, _PROBE_TS = "__probe_key", "__probe_ts"


def key_share(table: pa.Table, keys: list[str]) -> float:
    """How many entity rows share an entity row's value of ``keys``, on average over the
    rows (the sum of each value's row count squared, over the rows): the factor by which
    the broadcast join multiplies the work of each feature row. All rows without keys."""
    if not keys or table.num_rows == 0:
        return float(table.num_rows)
    try:
        counts = table.select(keys).group_by(keys).aggregate([([], "count_all")])
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return float(table.num_rows)  # a key type Arrow cannot group: as if all rows shared it
    squares = pc.sum(pc.multiply(counts.column("count_all"), counts.column("count_all")))
    rows: int = table.num_rows
    return float(squares.as_py()) / rows


def choose_strategy(
    strategy: JoinStrategy, views: list[SparkView], local: pa.Table | None
) -> Literal["window", "broadcast"]:
    """The plan to run: the configured one, or for ``auto`` broadcast pairs when the entity
    rows are local (pandas or Arrow), at most :data:`MAX_ENTITY_ROWS`, every view has join
    keys and a TTL, and an entity row shares its key with at most :data:`MAX_KEY_SHARE` rows
    on average (:func:`key_share`)."""
    if strategy != "auto":
        return strategy
    if local is None or not 0 < local.num_rows <= MAX_ENTITY_ROWS:
        return "window"
    if any(not v.join_keys or v.ttl_micros <= 0 for v in views):
        return "window"
    for group in key_groups(views):
        keys = [entity for entity, _ in group[0][1].join_keys]
        if key_share(local, keys) > MAX_KEY_SHARE:
            return "window"
    return "broadcast"


def _pairs(
    entities: DataFrame,
    scan: list[tuple[int, SparkView]],
    entity_types: dict[str, Any],
    min_ts: datetime | None,
    max_ts: datetime | None,
) -> tuple[DataFrame, Column, Any, dict[int, Any]]:
    """Every candidate of the scan, joined to its entity row's ``__row_id``, with the
    scan's order key (and its Spark type) to pick the greatest by, and the Spark type of
    each view's packed values."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructType

    view = scan[0][1]
    keys = [entity for entity, _ in view.join_keys]
    probe_keys = [f"{_PROBE_KEY}{j}" for j in range(len(keys))]
    probes = F.broadcast(
        entities.select(
            *[column(k).alias(p) for k, p in zip(keys, probe_keys, strict=True)],
            F.col(ROW_ID),
            micros(F.col(ENTITY_TS)).alias(_PROBE_TS),
        )
    )
    rows = feature_rows(scan, entity_types, min_ts, max_ts)
    event = micros(F.col(O_TS))
    candidate = event <= F.col(_PROBE_TS)
    ttls = [v.ttl_micros for _, v in scan]
    if min(ttls) > 0:  # older than every TTL of the scan: never kept, so never compared
        candidate = candidate & (event >= F.col(_PROBE_TS) - F.lit(max(ttls)))
    # Without keys (a view without entities) every entity row probes every feature row.
    for k, p in zip(keys, probe_keys, strict=True):
        candidate = candidate & (column(k) == F.col(p))
    schema = rows.schema  # a round trip to the JVM each time it is read
    order_names = [O_TS, O_CR, *order_columns(view.frame)]
    order_type = StructType([schema[c] for c in order_names])
    order = F.struct(*[F.col(c) for c in order_names])
    feat_types = {index: schema[f"{FEAT}{index}"].dataType for index, _ in scan}
    return rows.join(probes, on=candidate, how="inner"), order, order_type, feat_types


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
    from pyspark.sql.types import StructType

    schema = entities.schema
    entity_types = {f.name: f.dataType for f in schema.fields}
    packed = [f for f in schema.fields if f.name != ROW_ID]
    scans = [scan for group in key_groups(views) for scan in shared_scans(group)]
    scan_of = {index: s for s, scan in enumerate(scans) for index, _ in scan}
    built = [_pairs(entities, scan, entity_types, min_ts, max_ts) for scan in scans]
    feat_types = {index: t for *_, types in built for index, t in types.items()}

    def aligned(entity: Column | None, orders: dict[int, Column], feats: set[int]) -> list[Column]:
        """The union's columns, in one order for every part: nulls where a part has none."""
        return [
            F.col(ROW_ID),
            output_partition(order).alias(_PARTITION),
            (entity if entity is not None else F.lit(None).cast(StructType(packed))).alias(_ENTITY),
            *[
                orders.get(s, F.lit(None).cast(t)).alias(f"{_ORD}{s}")
                for s, (_, _, t, _) in enumerate(built)
            ],
            *[
                (F.col(f"{FEAT}{i}") if i in feats else F.lit(None).cast(t)).alias(f"{FEAT}{i}")
                for i, t in feat_types.items()
            ],
        ]

    rows = entities.select(*aligned(F.struct(*[column(f.name) for f in packed]), {}, set()))
    for s, (pairs, key, _, types) in enumerate(built):
        rows = rows.union(pairs.select(*aligned(None, {s: key}, set(types))))
    # One shuffle, straight to the output partition of each row id (in input order).
    grouped = rows.repartition(order.partitions, F.col(_PARTITION)).groupBy(_PARTITION, ROW_ID)
    matched = grouped.agg(
        F.first(_ENTITY, ignorenulls=True).alias(_ENTITY),
        *[
            F.max_by(f"{FEAT}{index}", f"{_ORD}{scan_of[index]}").alias(f"{MATCH}{index}")
            for index in range(len(views))
        ],
    )
    entity = F.col(_ENTITY)
    features = [
        out
        for index, view in enumerate(views)
        for out in view_outputs(index, view, entity.getField(ENTITY_TS))
    ]
    # Sorted as the aggregate already left each partition (its one partition value, then the
    # row id): a sort by the row id alone would sort every partition again.
    return matched.sortWithinPartitions(_PARTITION, ROW_ID).select(
        *[
            entity.getField(ENTITY_TS if c == timestamp_column else c).alias(c)
            for c in entity_columns
        ],
        *features,
    )
