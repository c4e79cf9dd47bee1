"""The Feast batch engine plugin: ``type: online_store.engine.StreamingMaterializationEngine``.

``feast materialize`` / ``materialize-incremental`` call :meth:`materialize` once per view
(through ``PassthroughProvider.materialize_single_feature_view``); Feast itself records
the interval in the registry after a job that did not fail, as it does for its local
engine. Per view we ask the offline store for the latest row per entity in the window
(``pull_latest_from_table_or_query``), then stream it: ``job.iter_batches(max_rows)``
when the store offers it (our DuckDB store: memory bounded), else ``job.to_arrow()``
sliced into chunks. The writer keeps Feast's never-older-over-newer rule, so batches in
any order, reruns and runs killed half-way all converge to the same Redis contents.

With a SQL registry the engine also records the newest event time it wrote per view
(:mod:`online_store.freshness`), for the service's freshness gauge, and drops the record
when ``feast apply`` removes the view. It also profiles the feature columns of the rows it
writes, as they stream past (:class:`foundation.statistics.TableProfiler`: no extra pass),
and stores one statistics run per view and window (:mod:`foundation.stats_log`).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import redis
import sqlalchemy as sa
from feast import BatchFeatureView, Entity, FeatureView, OnDemandFeatureView, StreamFeatureView
from feast.infra.common.materialization_job import (
    MaterializationJob,
    MaterializationJobStatus,
    MaterializationTask,
)
from feast.infra.compute_engines.base import ComputeEngine
from feast.infra.offline_stores.offline_store import RetrievalJob
from feast.infra.registry.base_registry import BaseRegistry
from feast.repo_config import FeastConfigBaseModel
from feast.utils import _convert_arrow_to_proto

from foundation.environment import sqlalchemy_url
from foundation.errors import BackendUnavailableError
from foundation.statistics import TableProfiler
from foundation.stats_log import FEATURE_VIEW, StatisticsLog
from online_store.freshness import FreshnessLog
from online_store.progress import ViewProgress
from online_store.store import FastRedisOnlineStore
from online_store.value_types import feast_value_type
from online_store.write_plan import DEFAULT_BATCH_ROWS, DEFAULT_CHUNK_ROWS, SourcePull
from online_store.writer import write_batches

logger = logging.getLogger(__name__)


class StreamingMaterializationEngineConfig(FeastConfigBaseModel):
    """``batch_engine:`` section. ``batch_rows`` bounds rows held per batch."""

    type: Literal["online_store.engine.StreamingMaterializationEngine"] = (
        "online_store.engine.StreamingMaterializationEngine"
    )
    batch_rows: int = DEFAULT_BATCH_ROWS
    write_chunk_rows: int = DEFAULT_CHUNK_ROWS


class StreamingMaterializationJob(MaterializationJob):
    """Outcome of one view's materialization."""

    def __init__(
        self,
        job_id: str,
        status: MaterializationJobStatus,
        error: BaseException | None = None,
        rows_in: int = 0,
        rows_written: int = 0,
    ) -> None:
        super().__init__()
        self._job_id = job_id
        self._status = status
        self._error = error
        self.rows_in = rows_in
        self.rows_written = rows_written

    def status(self) -> MaterializationJobStatus:
        return self._status

    def error(self) -> BaseException | None:
        return self._error

    def should_be_retried(self) -> bool:
        return False

    def job_id(self) -> str:
        return self._job_id

    def url(self) -> str | None:
        return None


def iter_job_batches(
    job: RetrievalJob, max_rows: int, progress: ViewProgress
) -> Iterator[pa.RecordBatch]:
    """Batches of a retrieval job, streaming when the job supports it.

    ``progress`` learns the number of rows to come as soon as the job knows it: before the
    first streamed batch for our DuckDB store, from the table for any other store.
    """
    streaming = getattr(job, "iter_batches", None)
    if callable(streaming):
        return iter(streaming(max_rows, on_total=progress.set_total))
    table = job.to_arrow()
    progress.set_total(table.num_rows)
    return iter(table.to_batches(max_chunksize=max_rows))


_DONE = object()


def prefetch(batches: Iterable[pa.RecordBatch], depth: int = 1) -> Iterator[pa.RecordBatch]:
    """Pull the next batch in a background thread while the caller writes this one.

    The offline store's query (DuckDB, C++) releases the GIL, so reading batch N+1
    overlaps encoding and sending batch N. At most ``depth`` batches wait in the queue,
    so memory stays bounded.
    """
    out: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        out.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            out.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            out.put(exc)

    thread = threading.Thread(target=produce, name="materialize-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=5)


class NewestEvent:
    """The greatest event time among the batches passed through :meth:`watch`."""

    def __init__(self, column: str) -> None:
        self.column = column
        self.value: datetime | None = None

    def watch(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Yield ``batches`` unchanged, keeping the running maximum of the event column."""
        for batch in batches:
            idx = batch.schema.get_field_index(self.column)
            if idx >= 0 and batch.num_rows:
                # One column, one type: naive or aware alike, so the times compare; the
                # freshness log reads naive as UTC.
                newest = pc.max(batch.column(idx)).as_py()
                if isinstance(newest, datetime) and (self.value is None or newest > self.value):
                    self.value = newest
            yield batch


def _rename(batch: pa.RecordBatch, mapping: dict[str, str]) -> pa.RecordBatch:
    if not mapping:
        return batch
    names = [mapping.get(n, n) for n in batch.schema.names]
    return pa.RecordBatch.from_arrays(batch.columns, names=names)


class StreamingMaterializationEngine(ComputeEngine):
    """Streams the offline store's latest rows per entity into Redis, chunk by chunk."""

    def __init__(
        self,
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        write_chunk_rows: int = DEFAULT_CHUNK_ROWS,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("type", None)
        super().__init__(**kwargs)
        self.batch_rows = batch_rows
        self.write_chunk_rows = write_chunk_rows
        self._freshness: dict[str, FreshnessLog] = {}
        self._statistics: dict[str, StatisticsLog] = {}
        self._registry_engine: sa.Engine | None = None

    def _sql_registry(self) -> sa.Engine | None:
        registry = self.repo_config.registry
        if getattr(registry, "registry_type", None) != "sql" or not registry.path:
            return None
        if self._registry_engine is None:
            kwargs = dict(getattr(registry, "sqlalchemy_config_kwargs", None) or {})
            kwargs.setdefault("pool_pre_ping", True)
            self._registry_engine = sa.create_engine(sqlalchemy_url(registry.path), **kwargs)
        return self._registry_engine

    def freshness_log(self, project: str) -> FreshnessLog | None:
        """The freshness records of ``project``; ``None`` unless the registry is SQL."""
        engine = self._sql_registry()
        if engine is None:
            return None
        log = self._freshness.get(project)
        if log is None:
            log = self._freshness[project] = FreshnessLog(engine, project)
        return log

    def statistics_log(self, project: str) -> StatisticsLog | None:
        """The statistics runs of ``project``; ``None`` unless the registry is SQL."""
        engine = self._sql_registry()
        if engine is None:
            return None
        log = self._statistics.get(project)
        if log is None:
            log = self._statistics[project] = StatisticsLog(engine, project)
        return log

    def _forget(self, project: str, views: Sequence[Any]) -> None:
        log = self.freshness_log(project) if views else None
        if log is not None:
            log.forget(v.name for v in views)
        stats = self.statistics_log(project) if views else None
        if stats is not None:
            stats.forget(FEATURE_VIEW, [v.name for v in views])

    def update(
        self,
        project: str,
        views_to_delete: Sequence[BatchFeatureView | StreamFeatureView | FeatureView],
        views_to_keep: Sequence[
            BatchFeatureView | StreamFeatureView | FeatureView | OnDemandFeatureView
        ],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
    ) -> None:
        """Create the freshness and statistics tables, forget removed views (``feast apply``).

        Creating the tables here keeps their one-time migrations out of the first
        ``feast materialize``.
        """
        log = self.freshness_log(project)
        if log is not None:
            log.ensure_table()
        stats = self.statistics_log(project)
        if stats is not None:
            stats.ensure_table()
        self._forget(project, views_to_delete)

    def teardown_infra(
        self,
        project: str,
        fvs: Sequence[BatchFeatureView | StreamFeatureView | FeatureView],
        entities: Sequence[Entity],
    ) -> None:
        """Forget the views' freshness (the online store owns and removes the data)."""
        self._forget(project, fvs)

    def _materialize_one(
        self, registry: BaseRegistry, task: MaterializationTask, **kwargs: Any
    ) -> MaterializationJob:
        view = task.feature_view
        job_id = f"{view.name}-{task.start_time}-{task.end_time}"
        pull = SourcePull.of(view)
        newest = NewestEvent(pull.spec.timestamp_field)
        profiler = TableProfiler(pull.spec.features)
        try:
            rows_in, rows_written = self._run(task, pull, newest, profiler)
        except Exception as exc:
            logger.debug("materialization of %s failed", view.name, exc_info=True)
            return StreamingMaterializationJob(job_id, MaterializationJobStatus.ERROR, exc)
        if newest.value is not None:
            self._record_freshness(task.project, view.name, newest.value)
        if profiler.rows:
            self._record_statistics(task, profiler)
        return StreamingMaterializationJob(
            job_id, MaterializationJobStatus.SUCCEEDED, None, rows_in, rows_written
        )

    def _record_freshness(self, project: str, view: str, newest: datetime) -> None:
        # The rows are in Redis already; a registry hiccup here only delays the gauge.
        try:
            log = self.freshness_log(project)
            if log is not None:
                log.record(view, newest)
        except sa.exc.SQLAlchemyError as exc:
            logger.warning("could not record the freshness of %s: %s", view, exc)

    def _record_statistics(self, task: MaterializationTask, profiler: TableProfiler) -> None:
        # Like freshness: the rows are written; losing their statistics must not fail the run.
        try:
            log = self.statistics_log(task.project)
            if log is not None:
                log.record(
                    subject_kind=FEATURE_VIEW,
                    subject_name=task.feature_view.name,
                    columns=profiler.finish(),
                    row_count=profiler.rows,
                    source="materialize",
                    window_start=task.start_time,
                    window_end=task.end_time,
                )
        except sa.exc.SQLAlchemyError as exc:
            logger.warning("could not record statistics of %s: %s", task.feature_view.name, exc)

    def _run(
        self,
        task: MaterializationTask,
        pull: SourcePull,
        newest: NewestEvent,
        profiler: TableProfiler,
    ) -> tuple[int, int]:
        view = task.feature_view
        if not getattr(view, "online", True):
            return 0, 0
        spec, mapping = pull.spec, pull.mapping
        if view.batch_source is None:
            raise ValueError(f"feature view '{view.name}' has no batch source to materialize")
        job = self.offline_store.pull_latest_from_table_or_query(
            config=self.repo_config,
            data_source=view.batch_source,
            start_date=task.start_time,
            end_date=task.end_time,
            **pull.columns,
        )
        with ViewProgress(view.name) as progress:
            batches = iter_job_batches(job, self.batch_rows, progress)
            # Profiled in the prefetch thread, beside the writer (NumPy and Arrow release the GIL).
            renamed = prefetch(profiler.watch(newest.watch(_rename(b, mapping) for b in batches)))
            if isinstance(self.online_store, FastRedisOnlineStore):
                store_config = self.repo_config.online_store
                client = self.online_store.client(self.repo_config)
                try:
                    stats = write_batches(
                        client,
                        spec,
                        renamed,
                        project=task.project,
                        key_ttl_seconds=store_config.key_ttl_seconds,
                        chunk_rows=self.write_chunk_rows,
                        progress=progress.update,
                    )
                except (redis.RedisError, OSError) as exc:
                    raise redis_failed(client, view.name, progress.done, exc) from exc
                return stats.rows_in, stats.rows_written
            # Any other online store: Feast's own row conversion, still in bounded chunks.
            join_types = {
                key: feast_value_type(vt)
                for key, vt in zip(spec.join_keys, spec.join_key_types, strict=True)
            }
            rows = 0
            for batch in renamed:
                data = _convert_arrow_to_proto(batch, view, join_types)
                self.online_store.online_write_batch(self.repo_config, view, data, None)
                rows += batch.num_rows
                progress.update(batch.num_rows)
            return rows, rows


def redis_failed(
    client: Any, view: str, rows_done: int, exc: BaseException
) -> BackendUnavailableError:
    """Say which Redis failed, during which view, how far it got, and that a rerun is safe."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    where = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}" if kwargs else "the cluster"
    return BackendUnavailableError(
        f"Redis at {where} failed while materializing feature view '{view}' after "
        f"{rows_done:,} rows ({type(exc).__name__}: {exc}); rows already written are "
        "complete and never older than what was stored, so rerun the same "
        "`feast materialize` window once Redis is reachable"
    )
