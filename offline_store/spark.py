"""The Feast ``OfflineStore`` plugin on Spark: the DuckDB store's exact answers, beyond one machine.

Select it in ``feature_store.yaml``::

    offline_store:
      type: offline_store.spark.SparkOfflineStore
      spark_conf:                     # like Feast's Spark store; used when no session is active
        spark.master: spark://spark-master:7077
        spark.sql.shuffle.partitions: "64"

Sources are Feast ``FileSource``s (Parquet file with pushed parts, directory, glob) and Feast's
``SparkSource`` (table, query or path). The point-in-time join is in
:mod:`offline_store.spark_join` (same semantics and tie-breaking as :mod:`offline_store.pit_join`),
the session in :mod:`offline_store.spark_session`, the job in :mod:`offline_store.spark_job`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from feast.data_source import DataSource
from feast.feature_view import DUMMY_ENTITY_ID, DUMMY_ENTITY_VAL, FeatureView
from feast.infra.offline_stores.offline_store import OfflineStore, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from feast.utils import compute_non_entity_date_range
from feast.value_type import ValueType

from foundation.errors import InvalidRequestError
from offline_store.checks import check_request_data, features_by_view
from offline_store.entities import is_sql
from offline_store.frame_types import extension_dtypes
from offline_store.partitions import declared_types, timestamp_types
from offline_store.pit_join import FeatureSpec
from offline_store.sandbox import UntrustedEntities
from offline_store.spark_entities import check_request, load_entities
from offline_store.spark_job import SparkRetrievalJob
from offline_store.spark_join import SparkView, pit_join
from offline_store.spark_pairs import JoinStrategy, choose_strategy, pit_join_pairs
from offline_store.spark_schema import quoted
from offline_store.spark_session import spark_session
from offline_store.spark_sources import (
    ORDER_FILE,
    ORDER_ROW,
    check_source,
    order_columns,
    read_source,
    source_key,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_LONG_MIN = -9223372036854775807


class SparkOfflineStoreConfig(FeastConfigBaseModel):
    """``offline_store:`` section of ``feature_store.yaml`` for this plugin."""

    type: Literal["offline_store.spark.SparkOfflineStore"] = "offline_store.spark.SparkOfflineStore"
    spark_conf: dict[str, str] | None = None
    """Settings of the Spark session built when none is active (``spark.master`` etc.)."""
    join_strategy: JoinStrategy = "auto"
    """How training sets are joined: ``window`` (shuffle and sort the feature rows with the
    entity rows), ``broadcast`` (ship the entity rows to the scans,
    :mod:`offline_store.spark_pairs`) or ``auto`` (broadcast for small pandas/Arrow entity
    rows without hot keys, :func:`offline_store.spark_pairs.choose_strategy`). Same answer."""


def session_for(config: RepoConfig) -> SparkSession:
    """The Spark session for a repo: the active one, or one built from ``spark_conf``."""
    oc = config.offline_store
    conf = oc.spark_conf if isinstance(oc, SparkOfflineStoreConfig) else None
    return spark_session(conf)


def _partition_types(views: Sequence[FeatureView]) -> list[dict[str, ValueType]]:
    """Per view, the types its source's partition columns are read with: what every view
    over that source declares together, so that they share one read; a view declaring a
    column otherwise than another over its source reads with its own."""
    merged: dict[tuple[Any, ...], dict[str, ValueType]] = {}
    own = [declared_types(fv) for fv in views]
    keys = [source_key(check_source(fv.batch_source, f"feature view {fv.name!r}")) for fv in views]
    clashing: set[tuple[Any, ...]] = set()
    for key, types in zip(keys, own, strict=True):
        union = merged.setdefault(key, {})
        if any(union.get(c, t) != t for c, t in types.items()):
            clashing.add(key)
        union.update(types)
    return [t if k in clashing else merged[k] for k, t in zip(keys, own, strict=True)]


def _view(
    spark: SparkSession,
    config: RepoConfig,
    fv: FeatureView,
    features: list[str],
    full: bool,
    frames: dict[tuple[Any, ...], DataFrame],
    types: dict[str, ValueType],
) -> SparkView:
    """The join's view of ``fv``; views over the same source read with the same partition
    ``types`` get the same DataFrame from ``frames`` (read once, and the join scans it once
    for all of them)."""
    source = check_source(fv.batch_source, f"feature view {fv.name!r}")
    prefix = fv.projection.name_to_use()
    key = (source_key(source), frozenset(types.items()))
    if key not in frames:
        frames[key] = read_source(spark, config, source, types)
    return SparkView(
        name=prefix,
        frame=frames[key],
        column_map=dict(source.field_mapping or {}),
        join_keys=tuple(
            (fv.projection.join_key_map.get(c.name, c.name), c.name) for c in fv.entity_columns
        ),
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column or None,
        features=tuple(FeatureSpec(f, f"{prefix}__{f}" if full else f) for f in features),
        ttl_micros=fv.ttl // timedelta(microseconds=1) if fv.ttl else 0,
    )


def _register_views(spark: SparkSession, views: list[FeatureView], specs: list[SparkView]) -> None:
    """Expose each source to entity SQL as a temp view named after its view and its source."""
    for fv, spec in zip(views, specs, strict=True):
        frame = spec.frame.drop(ORDER_FILE, ORDER_ROW)
        for name in {fv.name, fv.batch_source.name if fv.batch_source else ""} - {""}:
            frame.createOrReplaceTempView(name)


def _non_entity_rows(
    specs: list[SparkView], views: list[FeatureView], kwargs: dict[str, Any]
) -> DataFrame:
    """Every key seen in ``[start, end]`` once, as of ``end`` (Feast's retrieval without rows)."""
    from pyspark.sql import functions as F

    key_sets = {tuple(sorted(e for e, _ in spec.join_keys)) for spec in specs}
    if len(key_sets) > 1:
        raise InvalidRequestError(
            "without entity rows every requested view must have the same join keys (got "
            f"{sorted(key_sets)}); pass entity_df instead",
        )
    start, end = compute_non_entity_date_range(
        views, start_date=kwargs.get("start_date"), end_date=kwargs.get("end_date")
    )
    parts = []
    for spec in specs:
        ts = F.col(quoted(_raw(spec, spec.timestamp_field))).cast("timestamp")
        keys = [F.col(quoted(_raw(spec, m))).alias(e) for e, m in spec.join_keys]
        parts.append(
            spec.frame.where(ts.between(F.lit(_utc(start)), F.lit(_utc(end))))
            .select(*keys, F.lit(_utc(end)).cast("timestamp").alias("event_timestamp"))
            .distinct()
        )
    frame: DataFrame = parts[0]
    for part in parts[1:]:
        frame = frame.unionByName(part).distinct()
    return frame


def _raw(spec: SparkView, mapped: str) -> str:
    for raw, target in spec.column_map.items():
        if target == mapped:
            return raw
    return mapped


class SparkOfflineStore(OfflineStore):
    """Exact point-in-time joins and latest-per-entity pulls on Spark."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: Any,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        **kwargs: Any,
    ) -> SparkRetrievalJob:
        """Point-in-time correct features for each entity row (see :mod:`offline_store.spark_join`).

        Args:
            config: the repo config.
            feature_views: views referenced by ``feature_refs``.
            feature_refs: ``view:feature`` references (ODFV inputs included by Feast).
            entity_df: a pandas or Spark DataFrame, an Arrow table, a Parquet path or Spark SQL
                over the views' sources (visible by view and source name); ``None`` with
                ``start_date``/``end_date`` in ``kwargs``.
            registry: used to look up requested on-demand views.
            project: the Feast project.
            full_feature_names: name feature columns ``view__feature``.
            **kwargs: ``start_date``/``end_date`` when ``entity_df`` is None.

        Returns:
            A lazy job; the entity rows are read (for their time range) when it is first used.

        Raises:
            InvalidRequestError: an unsupported source, bad entity rows, or views with
                different join keys without entity rows.
            FeatureViewNotFoundError: a reference names no known view.
        """
        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
        by_view = features_by_view(feature_refs, feature_views, odfvs)
        for fv in by_view:
            check_source(fv.batch_source, f"feature view {fv.name!r}")
        if isinstance(entity_df, UntrustedEntities):
            raise InvalidRequestError(
                "training over HTTP runs on the DuckDB offline store (its sandbox and limits); "
                "with the Spark offline store build training sets in-process with the SDK",
            )

        def build() -> tuple[DataFrame, RetrievalMetadata]:
            spark = session_for(config)
            views = list(by_view)
            frames: dict[tuple[Any, ...], DataFrame] = {}
            specs = [
                _view(spark, config, fv, feats, full_feature_names, frames, types)
                for (fv, feats), types in zip(by_view.items(), _partition_types(views), strict=True)
            ]
            if isinstance(entity_df, str) and is_sql(entity_df):
                _register_views(spark, views, specs)  # the query may name them
            rows = _non_entity_rows(specs, views, kwargs) if entity_df is None else entity_df
            loaded = load_entities(spark, rows)
            check_request(specs, loaded)
            check_request_data(odfvs, loaded.columns)
            oc = config.offline_store
            configured = oc.join_strategy if isinstance(oc, SparkOfflineStoreConfig) else "auto"
            strategy = choose_strategy(configured, specs, loaded.local)
            join = pit_join_pairs if strategy == "broadcast" else pit_join
            frame = join(
                loaded.frame,
                specs,
                loaded.columns,
                loaded.timestamp_column,
                min_ts=loaded.min_ts,
                max_ts=loaded.max_ts,
                order=loaded.order,
            )
            metadata = RetrievalMetadata(
                features=feature_refs,
                keys=[c for c in loaded.columns if c != loaded.timestamp_column],
                min_event_timestamp=_utc(loaded.min_ts),
                max_event_timestamp=_utc(loaded.max_ts),
            )
            return frame, metadata

        return SparkRetrievalJob(
            build,
            full_feature_names=full_feature_names,
            on_demand_feature_views=odfvs,
            pandas_dtypes=extension_dtypes(entity_df),
        )

    @staticmethod
    def _pull(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None,
        start_date: datetime | None,
        end_date: datetime | None,
        *,
        latest_only: bool,
    ) -> SparkRetrievalJob:
        check_source(data_source, f"data source {data_source.name!r}")

        def build() -> tuple[DataFrame, None]:
            from pyspark.sql import functions as F

            # Not told the view: other partition columns are read as text (see DuckDB's).
            stamps = timestamp_types(timestamp_field, created_timestamp_column)
            frame = read_source(session_for(config), config, data_source, stamps)
            ts_cols = [timestamp_field] + (
                [created_timestamp_column] if created_timestamp_column else []
            )
            wanted = [*join_key_columns, *feature_name_columns, *ts_cols]
            missing = [c for c in wanted if c not in frame.columns]
            if missing:
                raise InvalidRequestError(
                    f"columns {missing} are not in the offline source {data_source.name!r} (it "
                    f"has {sorted(c for c in frame.columns if not c.startswith('__o_'))}); fix "
                    "the feature view schema or the source's field_mapping",
                    missing=missing,
                )
            ts = F.col(quoted(timestamp_field)).cast("timestamp")
            cond = ts.isNotNull()
            if start_date is not None:
                cond = cond & (ts >= F.lit(_utc(start_date)))
            if end_date is not None:
                cond = cond & (ts < F.lit(_utc(end_date)))
            out: list[Any] = []
            seen: set[str] = set()
            for col in wanted:
                if col in seen:
                    continue
                seen.add(col)
                c = F.col(quoted(col))
                out.append(c.cast("timestamp").alias(col) if col in ts_cols else c.alias(col))
            if not join_key_columns:
                out.append(F.lit(DUMMY_ENTITY_VAL).alias(DUMMY_ENTITY_ID))
            rows = frame.where(cond)
            if not latest_only:
                return rows.select(*out), None
            created = (
                F.coalesce(
                    F.unix_micros(F.col(quoted(created_timestamp_column)).cast("timestamp")),
                    F.lit(_LONG_MIN),
                )
                if created_timestamp_column
                else F.lit(_LONG_MIN)
            )
            # max of (order key, row) per key; the struct order is (event_ts, created_ts null
            # lowest, file if several, row), the DuckDB pull's order. Spark runs it as a sort
            # aggregate (a struct buffer is not fixed-width); at 10M rows -> 1M keys a window
            # (row_number) took 10.4 s warm against its 7.1-7.6 s, and a hash aggregate of the
            # latest event time then a semi join on it 9.8-10.3 s.
            best = F.max(
                F.struct(
                    ts.alias("__ts"),
                    created.alias("__cr"),
                    *[F.col(c) for c in order_columns(frame)],
                    F.struct(*out).alias("__row"),
                )
            ).alias("__best")
            keys = [F.col(quoted(k)) for k in join_key_columns]
            grouped = rows.groupBy(*keys).agg(best) if keys else rows.agg(best)
            return grouped.where(F.col("__best").isNotNull()).select("__best.__row.*"), None

        return SparkRetrievalJob(build)

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None,
        start_date: datetime,
        end_date: datetime,
    ) -> SparkRetrievalJob:
        """Latest row per join key with ``start_date <= event_ts < end_date``.

        Latest means greatest (event_ts, created_ts); exact duplicates resolve to the later
        file and row, as in the DuckDB store.

        Args:
            config: the repo config.
            data_source: a FileSource or SparkSource.
            join_key_columns: raw source join key columns (empty: entity-less view).
            feature_name_columns: raw source feature columns.
            timestamp_field: raw event timestamp column.
            created_timestamp_column: raw created timestamp column, if any.
            start_date: inclusive window start (naive = UTC).
            end_date: exclusive window end (naive = UTC).

        Returns:
            A lazy job returning keys, features, event and created timestamps.

        Raises:
            InvalidRequestError: an unsupported source, or a column is missing (at run time).
        """
        return SparkOfflineStore._pull(
            config,
            data_source,
            join_key_columns,
            feature_name_columns,
            timestamp_field,
            created_timestamp_column,
            start_date,
            end_date,
            latest_only=True,
        )

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> SparkRetrievalJob:
        """Every row with ``start_date <= event_ts < end_date`` (bounds optional).

        Args and Returns are as for :meth:`pull_latest_from_table_or_query`.

        Raises:
            InvalidRequestError: an unsupported source, or a column is missing (at run time).
        """
        return SparkOfflineStore._pull(
            config,
            data_source,
            join_key_columns,
            feature_name_columns,
            timestamp_field,
            created_timestamp_column,
            start_date,
            end_date,
            latest_only=False,
        )


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
