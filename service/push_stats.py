"""Statistics of pushed rows: profiled in memory as they are written, stored once a window.

A push writes a handful of rows, thousands of times a second at peak; one SQL row per push
would swamp the registry database. So each worker profiles the rows of every push (and
write-to-online-store) per feature view as part of the write, and every
``FEATURESTORE_STATISTICS_PUSH_WINDOW_SECONDS`` stores one run per view that received rows,
source ``push``, window = the wall-clock span it covers. Drift compares a saved dataset with
the newest run of its views, so a pushed window counts like a materialized one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import sqlalchemy as sa

from foundation.statistics import TableProfiler
from foundation.stats_log import FEATURE_VIEW, StatisticsLog, StatisticsRun

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Window:
    profiler: TableProfiler
    started: datetime


class PushStatistics:
    """Per-view profiles of the rows pushed since the last flush.

    Args:
        log: where runs are stored.
        window_seconds: how often :meth:`flush_forever` stores them.
    """

    def __init__(self, log: StatisticsLog, window_seconds: float) -> None:
        self._log = log
        self.window_seconds = window_seconds
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def note(self, view: str, features: list[str], table: pa.Table) -> None:
        """Profile rows just written to ``view`` (blocking; call from the writing thread)."""
        with self._lock:
            window = self._windows.get(view)
            if window is None:
                window = self._windows[view] = _Window(TableProfiler(features), datetime.now(UTC))
            window.profiler.update(table)

    def flush(self) -> list[StatisticsRun]:
        """Store one run per view that received rows since the last flush (blocking)."""
        with self._lock:
            windows, self._windows = self._windows, {}
        now = datetime.now(UTC)
        runs = []
        for view, window in windows.items():
            try:
                runs.append(
                    self._log.record(
                        subject_kind=FEATURE_VIEW,
                        subject_name=view,
                        columns=window.profiler.finish(),
                        row_count=window.profiler.rows,
                        source="push",
                        window_start=window.started,
                        window_end=now,
                    )
                )
            except sa.exc.SQLAlchemyError as exc:
                # The rows are written; their statistics are a best effort.
                log.warning("could not store statistics of rows pushed to %s: %s", view, exc)
        return runs

    async def flush_forever(self) -> None:
        """Flush every ``window_seconds`` until cancelled (then flush once more)."""
        try:
            while True:
                await asyncio.sleep(self.window_seconds)
                await asyncio.to_thread(self.flush)
        finally:
            await asyncio.to_thread(self.flush)
