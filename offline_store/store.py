"""The Feast ``OfflineStore`` plugin: Parquet on DuckDB.

Select it in ``feature_store.yaml``::

    offline_store:
      type: offline_store.store.DuckDBParquetOfflineStore
      memory_limit: 4GB          # beyond this, DuckDB spills to temp_directory
      temp_directory: /var/tmp/featurestore-duckdb
      threads: 4                 # default: all cores

Sources are Feast ``FileSource``s pointing at a Parquet file, a directory (hive partitions
detected), or a glob. The point-in-time join is in :mod:`offline_store.pit_join`, the pulls in
:mod:`offline_store.pulls`, push writes in :mod:`offline_store.writes`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal

import duckdb
import pyarrow as pa
from feast.data_source import DataSource
from feast.feature_view import FeatureView
from feast.infra.offline_stores.offline_store import OfflineStore
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import FeastConfigBaseModel, RepoConfig

from offline_store.checks import features_by_view
from offline_store.entities import EntitySource
from offline_store.historical import file_source, historical_job, source_pattern
from offline_store.job import DuckDBRetrievalJob, Query
from offline_store.listing import is_single_file
from offline_store.partitions import declared_types, timestamp_types
from offline_store.parts import StagedBatch, commit
from offline_store.pulls import build_pull_query
from offline_store.sandbox import UntrustedEntities
from offline_store.sources import DuckDBSettings, parquet_scan, resolve_path
from offline_store.writes import stage_batch


def stage_view_rows(config: RepoConfig, feature_view: FeatureView, table: pa.Table) -> StagedBatch:
    """The first step of appending rows to a feature view's Parquet source: staged where no
    reader sees them, hive partition columns typed as the view declares them
    (:func:`offline_store.writes.stage_batch`; :func:`offline_store.parts.commit` lands it).

    Raises:
        SchemaMismatchError: the rows do not fit the source (nothing staged).
        InvalidRequestError: the view's source is not a Parquet FileSource.
        OSError: writing failed; nothing is left staged.
    """
    source = file_source(feature_view.batch_source, f"feature view {feature_view.name!r}")
    path = resolve_path(config.repo_path, source.path)
    return stage_batch(path, table, partition_types=declared_types(feature_view))


class DuckDBParquetOfflineStoreConfig(FeastConfigBaseModel):
    """``offline_store:`` section of ``feature_store.yaml`` for this plugin."""

    type: Literal["offline_store.store.DuckDBParquetOfflineStore"] = (
        "offline_store.store.DuckDBParquetOfflineStore"
    )
    memory_limit: str = "4GB"
    """DuckDB memory limit; joins and sorts beyond it spill to ``temp_directory``."""
    temp_directory: str | None = None
    """Spill directory; default ``$TMPDIR/featurestore-duckdb``."""
    threads: int | None = None
    """DuckDB worker threads; default all cores."""


def settings_from_config(config: RepoConfig) -> DuckDBSettings:
    """DuckDB limits from a repo config (defaults when another offline store is configured)."""
    oc = config.offline_store
    if isinstance(oc, DuckDBParquetOfflineStoreConfig):
        return DuckDBSettings(oc.memory_limit, oc.temp_directory, oc.threads)
    return DuckDBSettings()


def pull_settings(config: RepoConfig) -> DuckDBSettings:
    """DuckDB limits for materialization pulls.

    Without an explicit ``threads`` setting a pull streams its rows on half of the available
    cores (at least one): its consumer, the materialization writer, and the online store's
    server need the others then. Picking the winners comes first and alone (nothing is
    written until they are known), so that step uses every core.
    """
    settings = settings_from_config(config)
    if settings.threads:
        return settings
    cores = len(os.sched_getaffinity(0))
    return replace(settings, threads=max(1, cores // 2), setup_threads=cores)


class DuckDBParquetOfflineStore(OfflineStore):
    """Exact point-in-time joins and bounded-memory pulls over Parquet, on DuckDB."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: EntitySource | UntrustedEntities | None,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        **kwargs: Any,
    ) -> DuckDBRetrievalJob:
        """Point-in-time correct features for each entity row (see :mod:`offline_store.pit_join`).

        Args:
            config: the repo config.
            feature_views: views referenced by ``feature_refs``.
            feature_refs: ``view:feature`` references (ODFV inputs included by Feast).
            entity_df: DataFrame, Arrow table, Parquet path or SQL over the offline data; or
                an HTTP caller's rows (:class:`~offline_store.sandbox.UntrustedEntities`),
                which run sandboxed within their limits.
            registry: used to look up requested on-demand views.
            project: the Feast project.
            full_feature_names: name feature columns ``view__feature``.
            **kwargs: ``start_date``/``end_date`` when ``entity_df`` is None: then every key
                with rows in that range is returned once, as of ``end_date``.

        Returns:
            A lazy job; nothing is read until a result is requested.

        Raises:
            InvalidRequestError: a non-Parquet source, or views with different join keys
                without entity rows.
            EntitySqlRefusedError: untrusted entity SQL reads more than the views.
            FeatureViewNotFoundError: a reference names no known view.
        """
        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
        by_view = features_by_view(feature_refs, feature_views, odfvs)
        return historical_job(
            config,
            by_view,
            feature_refs,
            entity_df,
            settings=settings_from_config(config),
            odfvs=odfvs,
            full_feature_names=full_feature_names,
            kwargs=kwargs,
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
    ) -> DuckDBRetrievalJob:
        source = file_source(data_source, f"data source {data_source.name!r}")
        pattern = source_pattern(config, source)
        # The pull is not told the view: partition columns other than the timestamps are
        # read as their text, which every declared type converts from exactly.
        stamps = timestamp_types(timestamp_field, created_timestamp_column)
        scan = parquet_scan(pattern, with_order_columns=True, partition_types=stamps)

        def prepare(con: duckdb.DuckDBPyConnection) -> Query:
            return build_pull_query(
                con,
                scan,
                join_key_columns=list(join_key_columns),
                feature_name_columns=list(feature_name_columns),
                timestamp_field=timestamp_field,
                created_timestamp_column=created_timestamp_column,
                start_date=start_date,
                end_date=end_date,
                latest_only=latest_only,
                single_file=is_single_file(pattern),
            )

        # Local files: reading column chunks ahead only holds memory (~40 MB on a 1M-row
        # pull) and was not faster; remote sources keep prefetching.
        settings = replace(pull_settings(config), parquet_prefetch="://" in pattern)
        return DuckDBRetrievalJob(settings, prepare)

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
    ) -> DuckDBRetrievalJob:
        """Latest row per join key with ``start_date <= event_ts < end_date``.

        Latest means greatest (event_ts, created_ts); exact duplicates resolve to the later
        file and row of the source. Stream it with ``job.iter_batches(max_rows)``.

        Args:
            config: the repo config.
            data_source: a FileSource.
            join_key_columns: raw source join key columns (empty: entity-less view).
            feature_name_columns: raw source feature columns.
            timestamp_field: raw event timestamp column.
            created_timestamp_column: raw created timestamp column, if any.
            start_date: inclusive window start (naive = UTC).
            end_date: exclusive window end (naive = UTC).

        Returns:
            A lazy job returning keys, features, event and created timestamps.

        Raises:
            InvalidRequestError: not a FileSource, or a column is missing (at run time).
        """
        return DuckDBParquetOfflineStore._pull(
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
    ) -> DuckDBRetrievalJob:
        """Every row with ``start_date <= event_ts < end_date`` (bounds optional).

        Args and Returns are as for :meth:`pull_latest_from_table_or_query`.

        Raises:
            InvalidRequestError: not a FileSource, or a column is missing (at run time).
        """
        return DuckDBParquetOfflineStore._pull(
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

    @staticmethod
    def offline_write_batch(
        config: RepoConfig,
        feature_view: FeatureView,
        table: pa.Table,
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Append rows to a feature view's Parquet source (Feast's push ``to=offline``).

        See :func:`offline_store.writes.stage_batch` for how each source shape is appended.

        Args:
            config: the repo config.
            feature_view: the view whose batch source receives the rows.
            table: rows with the source's columns (any order; cast to the source types).
                The ``__index_level_N__`` columns that ``pa.Table.from_pandas`` adds for
                the index of a filtered DataFrame (``FeatureStore.push`` passes one on)
                are dropped, not written or refused.
            progress: called with the number of rows written.

        Raises:
            SchemaMismatchError: columns missing, unknown, or not castable.
            InvalidRequestError: the source is not a FileSource.
        """
        commit([stage_view_rows(config, feature_view, table)])
        if progress is not None:
            progress(table.num_rows)
