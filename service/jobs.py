"""Materialization as background jobs, visible to every worker process.

A job is a ``FeatureStore.materialize`` (or ``materialize_incremental``) call run in
a worker thread. Its record and the per-view locks live in Redis, not in process
memory, because with ``--workers N`` the ``GET /materialize/{id}`` that follows a
``POST /materialize`` may land on another worker, and a second job for the same
view must be refused (409) whichever worker receives it. A job holds its views' locks
from submit to finish: one heartbeat thread per process refreshes the locks of every
job it has accepted, queued or running, so a job waiting for a free slot cannot lose
its lock to a duplicate. Locks expire unless refreshed, so a killed worker cannot block
a view forever.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import redis
import redis.asyncio as aioredis
from feast import FeatureStore

from foundation.errors import ConflictError, JobNotFoundError
from online_store import progress
from service.schemas import MaterializeJob, ViewProgress

log = logging.getLogger(__name__)

_LOCK_TTL_MS = 30_000
_RECORD_TTL_S = 7 * 24 * 3600
_SAVE_EVERY_S = 0.5

# All keys of a project share one hash tag, so the scripts also run on Redis Cluster.
_ACQUIRE = """
for i, k in ipairs(KEYS) do
  local holder = redis.call('GET', k)
  if holder then return {i, holder} end
end
for _, k in ipairs(KEYS) do redis.call('SET', k, ARGV[1], 'PX', ARGV[2]) end
return false
"""
_REFRESH = """
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('PEXPIRE', k, ARGV[2]) end
end
return 1
"""
_RELEASE = """
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('DEL', k) end
end
return 1
"""

Runner = Callable[[MaterializeJob], None]


class JobManager:
    """Starts materialization jobs and reports on them.

    Args:
        store: the Feast store whose ``materialize*`` methods run the jobs.
        async_client: the service's asyncio Redis client (records, locks).
        sync_client: a blocking client for the job threads.
        max_jobs: jobs running at once in this process (later ones queue, locks held).
        lock_ttl_ms: expiry of a view lock; refreshed every third of it until the job ends.
    """

    def __init__(
        self,
        *,
        store: FeatureStore,
        async_client: aioredis.Redis,
        sync_client: redis.Redis,
        max_jobs: int,
        lock_ttl_ms: int = _LOCK_TTL_MS,
    ) -> None:
        self.store = store
        self._lock_ttl_ms = lock_ttl_ms
        self._held: dict[str, list[str]] = {}  # job id -> lock keys, queued or running
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(
            target=self._refresh_forever, name="materialize-locks", daemon=True
        )
        self.project = store.project
        self._aredis = async_client
        self._redis = sync_client
        self._executor = ThreadPoolExecutor(max_workers=max_jobs, thread_name_prefix="materialize")
        self._running: dict[str, MaterializeJob] = {}  # view -> job, jobs of this process
        self._last_save: dict[str, float] = {}
        self._lock = threading.Lock()
        self._unsubscribe = progress.subscribe(self._on_progress)
        self._heartbeat.start()

    def _refresh_forever(self) -> None:
        while not self._stop.wait(self._lock_ttl_ms / 3000):
            with self._lock:
                held = list(self._held.items())
            for job_id, lock_keys in held:
                try:
                    self._redis.eval(
                        _REFRESH, len(lock_keys), *lock_keys, job_id, self._lock_ttl_ms
                    )
                except redis.RedisError as exc:
                    log.warning("job %s: lock refresh failed: %s", job_id, exc)

    def _key(self, kind: str, name: str) -> str:
        return f"featurestore:{{{self.project}}}:{kind}:{name}"

    async def submit(
        self,
        *,
        kind: str,
        views: list[str],
        start: datetime | None,
        end: datetime,
        runner: Runner | None = None,
    ) -> MaterializeJob:
        """Lock the views and start the job.

        Args:
            kind: ``materialize`` or ``materialize-incremental``.
            views: feature view names (already validated).
            start: window start (None for incremental).
            end: window end.
            runner: what the job runs; default calls the Feast store (tests inject faults).

        Returns:
            The job record, state ``pending``.

        Raises:
            ConflictError: a view is already being materialized.
        """
        job = MaterializeJob(
            job_id=uuid.uuid4().hex,
            kind=kind,  # type: ignore[arg-type]
            state="pending",
            feature_views=views,
            start_ts=start,
            end_ts=end,
            progress={v: ViewProgress() for v in views},
            created_at=datetime.now(UTC),
        )
        lock_keys = [self._key("materialize-lock", v) for v in views]
        held = await self._aredis.eval(
            _ACQUIRE, len(lock_keys), *lock_keys, job.job_id, self._lock_ttl_ms
        )  # type: ignore[misc]
        if held:
            view = views[int(held[0]) - 1]
            holder = held[1].decode() if isinstance(held[1], bytes) else str(held[1])
            raise ConflictError(
                f"feature view {view!r} is already being materialized by job {holder}; "
                f"wait for it to finish (GET /materialize/{holder}) and retry",
                feature_view=view,
                job_id=holder,
            )
        await self._aredis.set(
            self._key("job", job.job_id), job.model_dump_json(), ex=_RECORD_TTL_S
        )
        with self._lock:
            # From here the heartbeat keeps the locks while the job waits for a slot.
            self._held[job.job_id] = lock_keys
            for v in views:
                self._running[v] = job
        self._executor.submit(self._run, job, runner or self._materialize, lock_keys)
        return job

    async def get(self, job_id: str) -> MaterializeJob:
        """The job's current record (from any worker).

        Raises:
            JobNotFoundError: unknown or expired id.
        """
        raw = await self._aredis.get(self._key("job", job_id))
        if raw is None:
            raise JobNotFoundError(
                f"no materialization job {job_id!r}; ids come from POST /materialize and "
                f"expire after {_RECORD_TTL_S // 86400} days",
                job_id=job_id,
            )
        return MaterializeJob.model_validate_json(raw)

    def _save(self, job: MaterializeJob) -> None:
        self._redis.set(self._key("job", job.job_id), job.model_dump_json(), ex=_RECORD_TTL_S)
        self._last_save[job.job_id] = time.monotonic()

    def _materialize(self, job: MaterializeJob) -> None:
        if job.kind == "materialize":
            assert job.start_ts is not None
            self.store.materialize(job.start_ts, job.end_ts, job.feature_views)
        else:
            self.store.materialize_incremental(job.end_ts, job.feature_views)

    def _run(self, job: MaterializeJob, runner: Runner, lock_keys: list[str]) -> None:
        try:
            job.state = "running"
            self._save(job)
            runner(job)
            job.state = "succeeded"
            for p in job.progress.values():
                p.finished = True
        except Exception as exc:
            log.exception("materialization job %s failed", job.job_id)
            job.state = "failed"
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            job.finished_at = datetime.now(UTC)
            with self._lock:
                self._held.pop(job.job_id, None)
                for v in job.feature_views:
                    if self._running.get(v) is job:
                        del self._running[v]
            try:
                self._save(job)
                self._redis.eval(_RELEASE, len(lock_keys), *lock_keys, job.job_id)
            except redis.RedisError:
                log.exception("job %s: could not record its end; locks expire in %d s",
                              job.job_id, self._lock_ttl_ms // 1000)  # fmt: skip
            self._last_save.pop(job.job_id, None)

    def _on_progress(self, event: progress.ProgressEvent) -> None:
        view = event.view
        with self._lock:
            job = self._running.get(view)
        if job is None:
            return  # a `feast materialize` outside a job, or another process's job
        state = job.progress.setdefault(view, ViewProgress())
        state.rows_done = event.rows_done
        state.rows_total = event.rows_total
        state.finished = event.finished
        if state.finished or time.monotonic() - self._last_save.get(job.job_id, 0) > _SAVE_EVERY_S:
            try:
                self._save(job)
            except redis.RedisError as exc:
                log.warning("job %s: progress not saved: %s", job.job_id, exc)

    def shutdown(self) -> None:
        """Stop listening for progress; running jobs finish in their threads.

        The lock heartbeat stops too: locks of jobs still queued or running lapse after
        the lock TTL, as they would if this process died.
        """
        self._unsubscribe()
        self._stop.set()
        # wait=False: a shutdown must not hang on a long job; its locks expire by themselves.
        self._executor.shutdown(wait=False)
