"""Progress: log lines off a terminal, listener events, and events from a real materialize."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from online_store.progress import ProgressEvent, ViewProgress, subscribe
from tests.online_store.feast_repo import DUCKDB, RepoSpec, make_store
from tests.online_store.views import T0, parquet_views


def test_non_tty_progress_prints_rows_rate_and_eta() -> None:
    stream = io.StringIO()
    with ViewProgress("stats", total=100, stream=stream, log_every=0) as progress:
        progress.update(40)
        progress.update(60)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("stats: 40/100 rows,")
    assert "rows/s" in lines[0]
    assert "ETA" in lines[0]
    assert lines[-1].startswith("stats: 100/100 rows")


def test_non_tty_progress_prints_eta_once_the_total_is_learned() -> None:
    stream = io.StringIO()
    progress = ViewProgress("stats", stream=stream, log_every=0)
    progress.update(10)
    progress.set_total(100)
    progress.update(40)
    lines = stream.getvalue().splitlines()
    assert "ETA" not in lines[0]
    assert lines[1] == "stats: 100 rows to write"
    assert lines[2].startswith("stats: 50/100 rows,")
    assert "ETA" in lines[2]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tty_bar_shows_the_total_and_eta_once_learned() -> None:
    stream = _Terminal()
    with ViewProgress("stats", stream=stream) as progress:
        progress.set_total(200)
        progress.update(50)
        progress.update(150)
    text = stream.getvalue()
    assert "stats" in text
    assert "200/200" in text
    assert "<00:00" in text  # tqdm's remaining-time field, present only with a total


def test_listener_receives_events_until_unsubscribed() -> None:
    events: list[ProgressEvent] = []
    unsubscribe = subscribe(events.append)
    progress = ViewProgress("v", total=None, stream=io.StringIO())
    progress.update(5)
    unsubscribe()
    progress.update(5)
    progress.close()
    assert events == [ProgressEvent("v", 5, None, False)]


def test_failing_listener_does_not_break_progress() -> None:
    def broken(event: ProgressEvent) -> None:
        raise RuntimeError("listener bug")

    unsubscribe = subscribe(broken)
    try:
        progress = ViewProgress("v", stream=io.StringIO())
        progress.update(1)
        progress.close()
    finally:
        unsubscribe()
    assert progress.done == 1


def test_materialize_publishes_progress_per_view(tmp_path: Path, redis_url: str) -> None:
    parquet = tmp_path / "d.parquet"
    pq.write_table(
        pa.table(
            {
                "driver_id": pa.array([1, 2, 3], pa.int64()),
                "a_x": [1.0, 2.0, 3.0],
                "b_x": [1.0, 2.0, 3.0],
                "event_ts": pa.array([T0] * 3, pa.timestamp("us", tz="UTC")),
            }
        ),
        parquet,
    )
    store = make_store(
        tmp_path / "repo",
        RepoSpec("p", redis_url, True, True, offline=DUCKDB),
        lambda: parquet_views(parquet),
    )
    events: list[ProgressEvent] = []
    unsubscribe = subscribe(events.append)
    try:
        store.materialize(T0 - timedelta(1), T0 + timedelta(1))
    finally:
        unsubscribe()
    finished = {e.view: e.rows_done for e in events if e.finished}
    assert finished == {"a": 3, "b": 3}
    # The total (entities in the window) is known before the first row is written.
    for view in ("a", "b"):
        first_rows = next(e for e in events if e.view == view and e.rows_done > 0)
        assert first_rows.rows_total == 3
