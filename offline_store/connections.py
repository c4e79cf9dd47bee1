"""DuckDB databases for jobs: opened with a job's limits, reused by the next job of the process.

Opening and closing an in-memory DuckDB database costs 20-40 ms (its buffer manager, thread
pool and catalog), as much as everything else a small training call adds to its query. So a
job borrows an idle database opened with the same :class:`DuckDBSettings`, works on a new
connection to it, and hands the database back when it is done:

- One job at a time per database: ``memory_limit``, ``threads`` and the spill limit bound
  each job exactly as a database of its own did. Concurrent jobs open more databases; at most
  :data:`IDLE_PER_SETTINGS` of each kind wait idle afterwards.
- A job's temp tables, temp views and registered frames belong to its connection and are
  gone when it closes; the next job starts with an empty temp catalog.
- What is kept is what is safe to keep: the database's settings (all of them set when it is
  opened) and its Parquet footer cache, which DuckDB checks against each file before use (a
  file rewritten in place is read again, whatever its modification time says).
- A database is given back only after a job that ended normally, with its configuration not
  locked. A failed, interrupted or abandoned job closes it; a sandboxed job (untrusted SQL,
  :func:`offline_store.sandbox.lock_down`) never borrows one and closes its own.
- The idle databases are closed before the process forks: a child can neither use nor close
  (nor free, at its exit) a DuckDB database it inherited.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from offline_store.sources import DuckDBSettings, execute, fetch_all

IDLE_PER_SETTINGS = 2


def open_database(settings: DuckDBSettings) -> duckdb.DuckDBPyConnection:
    """Open an in-memory DuckDB database with limits, UTC session time zone and ordered output.

    Args:
        settings: memory limit, spill directory, thread count and Parquet prefetching.

    Returns:
        A connection to the new database; the caller closes it.
    """
    temp_dir = settings.temp_directory or os.path.join(
        os.environ.get("TMPDIR", "/tmp"), "featurestore-duckdb"
    )
    os.makedirs(temp_dir, exist_ok=True)
    config: dict[str, str | bool | int | float | list[str]] = {
        "memory_limit": settings.memory_limit,
        "temp_directory": temp_dir,
        # Results must come back in entity-row order; this keeps ORDER BY through COPY/streams.
        "preserve_insertion_order": True,
    }
    if settings.threads:
        config["threads"] = settings.threads
    if settings.max_temp_size:
        config["max_temp_directory_size"] = settings.max_temp_size
    con = duckdb.connect(database=":memory:", config=config)
    # The next two are session settings: set GLOBAL, every job's connection (a cursor of
    # this one, see _session) starts with them; a plain SET would hold for this one alone.
    # A job reads each source's footers several times (its row count for the join shape,
    # then each scan of the join): cached, they are read once.
    execute(con, "SET GLOBAL parquet_metadata_cache = true")
    if not settings.parquet_prefetch:
        execute(con, "SET GLOBAL disable_parquet_prefetching = true")
    # Memory a finished job freed goes back to the system within a second or two, not when
    # the database closes (an idle one kept 150-200 MB after a 100k-row training set without).
    execute(con, "SET allocator_background_threads = true")
    return con


def _session(database: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A new connection to ``database`` with the session settings every job relies on."""
    con = database.cursor()
    # TIMESTAMPTZ values then print and convert as UTC (zone "UTC", not the machine's
    # "Etc/UTC" a new connection starts with), and naive timestamps cast as UTC.
    execute(con, "SET TimeZone='UTC'")
    # Progress bars would land on the stdout of CLI tools and servers.
    execute(con, "SET enable_progress_bar = false")
    return con


class _Pool:
    """Idle databases of this process, by the settings they were opened with."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[DuckDBSettings, list[duckdb.DuckDBPyConnection]] = {}

    def take(self, settings: DuckDBSettings) -> duckdb.DuckDBPyConnection:
        with self._lock:
            idle = self._idle.get(settings)
            if idle:
                return idle.pop()
        return open_database(settings)

    def give_back(self, settings: DuckDBSettings, database: duckdb.DuckDBPyConnection) -> None:
        try:
            locked = fetch_all(database, "SELECT current_setting('lock_configuration')")[0][0]
        except duckdb.Error:
            locked = True  # not usable: closed below
        with self._lock:
            idle = self._idle.setdefault(settings, [])
            if not locked and len(idle) < IDLE_PER_SETTINGS:
                idle.append(database)
                return
        database.close()

    def close_idle(self) -> None:
        """Close every idle database (before a fork: a child cannot close, or even free, a
        DuckDB database it inherited; at its exit the process would crash)."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for databases in idle.values():
            for database in databases:
                database.close()

    def idle_count(self, settings: DuckDBSettings) -> int:
        with self._lock:
            return len(self._idle.get(settings, ()))


_POOL = _Pool()
os.register_at_fork(before=_POOL.close_idle)


@contextmanager
def job_connection(
    settings: DuckDBSettings, *, reuse: bool = True
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A new connection to a database with ``settings`` of the job's own, for one job.

    Args:
        settings: the database's limits.
        reuse: borrow an idle database and give it back afterwards; ``False`` for a job that
            locks its database down (untrusted SQL): it gets a new one and closes it.

    Yields:
        The connection; closed when the block ends.
    """
    database = _POOL.take(settings) if reuse else open_database(settings)
    clean = False
    try:
        con = _session(database)
        try:
            yield con
            clean = True
        finally:
            con.close()
    finally:
        if reuse and clean:
            _POOL.give_back(settings, database)
        else:
            database.close()


def idle_databases(settings: DuckDBSettings) -> int:
    """How many databases with ``settings`` wait idle in this process (for tests)."""
    return _POOL.idle_count(settings)
