"""The Feast batch engine plugin on Spark: ``type: online_store.spark.SparkMaterializationEngine``.

Per view, the offline store's latest-row-per-entity pull (``pull_latest_from_table_or_query``)
is a Spark DataFrame when the repo uses ``offline_store.spark.SparkOfflineStore``: Spark picks the
winners, and each partition is written to Redis (single or Cluster) by the executor holding it,
with the same writer and byte codec as :mod:`online_store.engine` (``write_batches``) and so the
same never-older-over-newer rule: reruns and runs killed half-way converge to the same bytes. The
driver only receives one small stats row per partition; it never holds the feature rows.

Progress (rows written / total) comes from a Spark accumulator the executors add to, polled by
the driver; the total is the winners' count, computed on the persisted winners. The freshness
record (newest event written) is the maximum the executors report, and the statistics run of
the view is the merge of the profiles each executor took of the rows it wrote (no extra pass
over the data). With any other offline
store the engine behaves as :class:`online_store.engine.StreamingMaterializationEngine`.
"""

from __future__ import annotations

import pickle
import threading
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pyarrow.compute as pc
from feast.infra.common.materialization_job import MaterializationTask
from feast.repo_config import FeastConfigBaseModel

from foundation.statistics import TableProfiler
from online_store.connection import resolve_target
from online_store.engine import NewestEvent, StreamingMaterializationEngine, redis_failed
from online_store.progress import ViewProgress
from online_store.spark_writer import STATS_DDL, partition_writer
from online_store.store import FastRedisOnlineStore, RedisType
from online_store.write_plan import DEFAULT_BATCH_ROWS, DEFAULT_CHUNK_ROWS, SourcePull, WriteSpec

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SparkMaterializationEngineConfig(FeastConfigBaseModel):
    """``batch_engine:`` section. ``write_chunk_rows`` bounds rows per Redis round trip."""

    type: Literal["online_store.spark.SparkMaterializationEngine"] = (
        "online_store.spark.SparkMaterializationEngine"
    )
    batch_rows: int = DEFAULT_BATCH_ROWS
    write_chunk_rows: int = DEFAULT_CHUNK_ROWS


class SparkMaterializationEngine(StreamingMaterializationEngine):
    """Spark picks the latest row per entity; executors write their partitions to Redis."""

    def _run(
        self,
        task: MaterializationTask,
        pull: SourcePull,
        newest: NewestEvent,
        profiler: TableProfiler,
    ) -> tuple[int, int]:
        view = task.feature_view
        if not getattr(view, "online", True) or not isinstance(
            self.online_store, FastRedisOnlineStore
        ):
            return super()._run(task, pull, newest, profiler)
        if view.batch_source is None:
            raise ValueError(f"feature view '{view.name}' has no batch source to materialize")
        job = self.offline_store.pull_latest_from_table_or_query(
            config=self.repo_config,
            data_source=view.batch_source,
            start_date=task.start_time,
            end_date=task.end_time,
            **pull.columns,
        )
        to_spark_df = getattr(job, "to_spark_df", None)
        if not callable(to_spark_df):
            # Not a Spark offline store: stream through the driver like the base engine.
            return super()._run(task, pull, newest, profiler)
        frame = to_spark_df()
        for raw, mapped in pull.mapping.items():
            if raw in frame.columns:
                frame = frame.withColumnRenamed(raw, mapped)
        return self._write_from_executors(task, pull.spec, frame, newest, profiler)

    def _write_from_executors(
        self,
        task: MaterializationTask,
        spec: WriteSpec,
        frame: Any,
        newest: NewestEvent,
        profiler: TableProfiler,
    ) -> tuple[int, int]:
        from pyspark import StorageLevel

        store_config = self.repo_config.online_store
        target = resolve_target(store_config.connection_string, self.repo_config.repo_path)
        spark = frame.sparkSession
        accumulator = spark.sparkContext.accumulator(0)
        writer = partition_writer(
            target=target,
            cluster=store_config.redis_type == RedisType.redis_cluster,
            timeout=store_config.socket_timeout_seconds,
            spec=spec,
            project=task.project,
            key_ttl_seconds=store_config.key_ttl_seconds,
            chunk_rows=self.write_chunk_rows,
            accumulator=accumulator,
        )
        # The winners are computed once and kept by the executors (memory, then disk): the
        # count for the progress total and the write both read them.
        winners = frame.persist(StorageLevel.MEMORY_AND_DISK)
        stop = threading.Event()
        try:
            with ViewProgress(task.feature_view.name) as progress:
                progress.set_total(winners.count())

                def poll() -> None:
                    while not stop.wait(0.5):
                        _report(progress, accumulator.value)

                poller = threading.Thread(target=poll, name="spark-progress", daemon=True)
                poller.start()
                try:
                    stats = winners.mapInArrow(writer, STATS_DDL).toArrow()
                except Exception as exc:
                    # Executor errors arrive as Spark's PythonException, the Redis error
                    # named in its text.
                    store = self.online_store
                    if "redis" not in str(exc).lower() or not isinstance(
                        store, FastRedisOnlineStore
                    ):
                        raise
                    client = store.client(self.repo_config)
                    raise redis_failed(client, spec.name, progress.done, exc) from exc
                finally:
                    stop.set()
                    poller.join(timeout=5)
                _report(progress, accumulator.value)
        finally:
            winners.unpersist()
        # Each partition's statistics, profiled by its executor as it wrote the rows.
        for raw in stats.column("profile").to_pylist():
            if raw is not None:
                profiler.merge(pickle.loads(raw))  # our own executors' bytes
        top = pc.max(stats.column("newest")).as_py()
        if top is not None:
            newest.value = _EPOCH + timedelta(microseconds=top)
        return (
            int(pc.sum(stats.column("rows_in")).as_py() or 0),
            int(pc.sum(stats.column("rows_written")).as_py() or 0),
        )


def _report(progress: ViewProgress, done: int) -> None:
    if done > progress.done:
        progress.update(done - progress.done)
