"""Materialization progress: a bar per view on a terminal, log lines otherwise, and a
process-wide listener hook (the HTTP service shows job progress through it).

    unsubscribe = subscribe(lambda event: print(event.view, event.rows_done))
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

logger = logging.getLogger("online_store.materialize")

_listeners: list[Callable[[ProgressEvent], None]] = []
_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """A progress update for one view's materialization."""

    view: str
    rows_done: int
    rows_total: int | None
    finished: bool


def subscribe(callback: Callable[[ProgressEvent], None]) -> Callable[[], None]:
    """Receive every :class:`ProgressEvent` of this process.

    Args:
        callback: called synchronously from the materializing thread; keep it fast.

    Returns:
        A function that removes the callback.
    """
    with _lock:
        _listeners.append(callback)

    def unsubscribe() -> None:
        with _lock:
            if callback in _listeners:
                _listeners.remove(callback)

    return unsubscribe


def _publish(event: ProgressEvent) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(event)
        except Exception:  # a broken listener must not fail a materialization
            logger.exception("progress listener failed")


class ViewProgress:
    """Progress of one view: rows, rows/s and ETA.

    Args:
        view: feature view name.
        total: expected rows, if known (else :meth:`set_total` once it is).
        stream: where the bar goes; a bar only when it is a TTY, log lines otherwise.
        log_every: minimum seconds between log lines in non-TTY mode.
    """

    def __init__(
        self,
        view: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        log_every: float = 5.0,
    ) -> None:
        self.view = view
        self.total = total
        self.done = 0
        self._stream = stream or sys.stderr
        self._log_every = log_every
        self._start = time.monotonic()
        self._last_log = self._start
        self._bar: tqdm[object] | None = None
        if self._stream.isatty():
            self._bar = tqdm(
                total=total, desc=view, unit="rows", unit_scale=True, file=self._stream
            )

    def set_total(self, total: int) -> None:
        """Set the number of rows expected, once it is known; the ETA starts from here.

        May be called from another thread than :meth:`update` (the engine's prefetching
        thread learns the total), but not concurrently with it.
        """
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()
        else:
            print(f"{self.view}: {total} rows to write", file=self._stream, flush=True)
        _publish(ProgressEvent(self.view, self.done, self.total, False))

    def update(self, rows: int) -> None:
        """Record ``rows`` more input rows processed."""
        self.done += rows
        if self._bar is not None:
            self._bar.update(rows)
        else:
            now = time.monotonic()
            if now - self._last_log >= self._log_every:
                self._last_log = now
                self._log_line(now)
        _publish(ProgressEvent(self.view, self.done, self.total, False))

    def _log_line(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        if self.total and rate > 0:
            eta = f", ETA {max(self.total - self.done, 0) / rate:.0f}s"
            of = f"/{self.total}"
        else:
            eta, of = "", ""
        print(
            f"{self.view}: {self.done}{of} rows, {rate:,.0f} rows/s{eta}",
            file=self._stream,
            flush=True,
        )

    def close(self) -> None:
        """Finish the bar (or print the final line) and publish ``finished=True``."""
        if self._bar is not None:
            self._bar.close()
        else:
            self._log_line(time.monotonic())
        _publish(ProgressEvent(self.view, self.done, self.total, True))

    def __enter__(self) -> ViewProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
