"""Offline pushes land as immutable parts: concurrent writers keep every row, readers never
see a broken file, and compaction folds the parts back without losing or doubling rows."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast.data_source import PushMode

from offline_store import compact as compact_module
from offline_store.compact import compact
from offline_store.connections import open_database
from offline_store.listing import parquet_glob, source_files
from offline_store.sources import DuckDBSettings, fetch_all, parquet_scan
from offline_store.writes import write_batch
from service import cli
from tests.offline_store.push_helpers import EXISTING, T0, latest_rate, push_store
from tests.offline_store.repo_helpers import DRIVER_SCHEMA, write_rows

PROCESSES = 3
THREADS = 4
PUSHES = 5


def _row(driver_id: int, rate: float = 0.5) -> pa.Table:
    return pa.table(
        {
            "driver_id": pa.array([driver_id], pa.int64()),
            "event_timestamp": pa.array([T0], pa.timestamp("us", tz="UTC")),
            "created": pa.array([T0], pa.timestamp("us", tz="UTC")),
            "rate": pa.array([rate], pa.float64()),
            "trips": pa.array([1], pa.int64()),
        }
    )


def _push_many(path: str, worker: int) -> None:
    """One process: THREADS threads, each pushing PUSHES one-row batches."""

    def thread(t: int) -> None:
        for i in range(PUSHES):
            write_batch(path, _row(1_000_000 * (worker + 1) + 1000 * t + i))

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(thread, range(THREADS)))


def _count(path: str) -> int:
    con = open_database(DuckDBSettings(memory_limit="256MB", threads=1))
    try:
        scan = parquet_scan(parquet_glob(path), with_order_columns=True)
        return int(fetch_all(con, f"SELECT count(*) FROM {scan}")[0][0])
    finally:
        con.close()


def _ids(path: str) -> list[int]:
    return sorted(pq.read_table(source_files(path)).column("driver_id").to_pylist())


@pytest.mark.parametrize("layout", ["file", "directory"])
def test_concurrent_pushes_from_processes_and_threads_keep_every_row(
    tmp_path: Path, layout: str
) -> None:
    target = tmp_path / ("driver.parquet" if layout == "file" else "driver/0.parquet")
    write_rows(target, DRIVER_SCHEMA, EXISTING)
    path = str(target if layout == "file" else target.parent)
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                seen.append(_count(path))
            except BaseException as exc:  # a half-written file would show up here
                errors.append(exc)
                return

    watcher = threading.Thread(target=reader)
    watcher.start()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_push_many, args=(path, w)) for w in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    done.set()
    watcher.join()
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    assert errors == []
    assert seen, "the reader ran during the pushes"
    assert seen == sorted(seen)  # rows only ever appear, whole pushes at a time
    expected = sorted(
        [1]
        + [
            1_000_000 * (w + 1) + 1000 * t + i
            for w in range(PROCESSES)
            for t in range(THREADS)
            for i in range(PUSHES)
        ]
    )
    assert _ids(path) == expected
    assert _count(path) == len(expected)


def test_first_push_to_a_missing_file_races_safely(tmp_path: Path) -> None:
    path = str(tmp_path / "new" / "x.parquet")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: write_batch(path, _row(i)), range(16)))
    assert _ids(path) == list(range(16))


def test_compaction_folds_parts_into_the_file_for_stock_readers(tmp_path: Path) -> None:
    fs = push_store(tmp_path, "data/driver.parquet")
    source = tmp_path / "data" / "driver.parquet"
    write_rows(source, DRIVER_SCHEMA, EXISTING)
    for rate in (0.7, 0.9):  # exact ties with the stored row: the later push wins
        frame = pd.DataFrame(
            {"driver_id": [1], "event_timestamp": [T0], "created": [T0], "rate": [rate],
             "trips": [2]}
        )  # fmt: skip
        fs.push("driver_push", frame, to=PushMode.OFFLINE)
    assert pq.read_table(source).num_rows == 1  # stock readers see the file alone
    assert latest_rate(fs) == 0.9

    result = compact(str(source))

    assert (result.parts_merged, result.rows) == (2, 3)
    assert pq.read_table(source)["rate"].to_pylist() == [0.1, 0.7, 0.9]
    assert source_files(str(source)) == [str(source)]
    assert latest_rate(fs) == 0.9
    assert compact(str(source)).parts_merged == 0


def test_compaction_during_pushes_loses_and_doubles_nothing(tmp_path: Path) -> None:
    source = tmp_path / "driver.parquet"
    write_rows(source, DRIVER_SCHEMA, EXISTING)
    stop = threading.Event()

    def compactor() -> None:
        while not stop.is_set():
            compact(str(source))

    runner = threading.Thread(target=compactor)
    runner.start()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: write_batch(str(source), _row(100 + i)), range(60)))
    stop.set()
    runner.join()
    compact(str(source))
    assert source_files(str(source)) == [str(source)]  # everything folded into the file
    assert sorted(pq.read_table(source).column("driver_id").to_pylist()) == [1, *range(100, 160)]


def test_directory_compaction_keeps_the_merged_rows_in_place(tmp_path: Path) -> None:
    directory = tmp_path / "driver"
    write_rows(directory / "0.parquet", DRIVER_SCHEMA, EXISTING)
    for i in range(3):
        write_batch(str(directory), _row(10 + i))
    result = compact(str(directory))
    assert (result.parts_merged, result.rows) == (3, 3)
    files = source_files(str(directory))
    assert len(files) == 2
    assert files[0].endswith("0.parquet")
    later = write_batch(str(directory), _row(20))
    assert source_files(str(directory))[-1] == later  # a later push still sorts last
    assert _ids(str(directory)) == [1, 10, 11, 12, 20]


def test_compaction_interrupted_after_publishing_is_finished_by_the_next_run(
    tmp_path: Path,
) -> None:
    source = tmp_path / "driver.parquet"
    write_rows(source, DRIVER_SCHEMA, EXISTING)
    for i in range(3):
        write_batch(str(source), _row(10 + i))
    real = compact_module._recover
    calls = {"n": 0}

    def crash_after_publish(directory: str, published: str) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the call that would delete the merged parts
            raise OSError("killed")
        real(directory, published)

    with (
        mock.patch.object(compact_module, "_recover", side_effect=crash_after_publish),
        pytest.raises(OSError, match="killed"),
    ):
        compact(str(source))
    assert pq.read_table(source).num_rows == 4  # published, parts not yet deleted
    compact(str(source))
    assert _ids(str(source)) == [1, 10, 11, 12]
    assert source_files(str(source)) == [str(source)]


def test_pushed_rows_are_durable_before_the_call_returns(tmp_path: Path) -> None:
    source = tmp_path / "driver.parquet"
    write_rows(source, DRIVER_SCHEMA, EXISTING)
    with mock.patch("os.fsync", wraps=__import__("os").fsync) as fsync:
        written = write_batch(str(source), _row(5))
    assert fsync.call_count >= 2  # the part and its directory
    assert pq.read_table(written).column("driver_id").to_pylist() == [5]


def test_compact_cli_compacts_every_view_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    push_store(tmp_path, "data/driver.parquet")
    source = tmp_path / "data" / "driver.parquet"
    write_rows(source, DRIVER_SCHEMA, EXISTING)
    write_batch(str(source), _row(7))
    assert cli.main(["compact", "--repo", str(tmp_path)]) == 0
    assert "parts merged: 1" in capsys.readouterr().out
    assert pq.read_table(source).column("driver_id").to_pylist() == [1, 7]
    assert cli.main(["compact", "--repo", str(tmp_path), "--feature-view", "nope"]) == 1
    assert "'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["file", "directory"])
def test_compaction_removes_stages_of_pushes_that_died_before_committing(
    tmp_path: Path, layout: str
) -> None:
    """A push killed between stage and commit leaves a hidden file nobody reads; compaction
    removes it once it is older than any live push's stage, and leaves younger ones."""
    import os
    import time

    from offline_store.parts import STALE_STAGE_SECONDS, parts_directory, temp_path

    if layout == "file":
        source = tmp_path / "driver.parquet"
        write_rows(source, DRIVER_SCHEMA, EXISTING)
        write_batch(str(source), _row(10))
        folders = [parts_directory(str(source)), str(tmp_path)]  # parts, a first push's
    else:
        source = tmp_path / "driver"
        write_rows(source / "0.parquet", DRIVER_SCHEMA, EXISTING)
        folders = [str(source)]
    old = [temp_path(folder) for folder in folders]
    young = [temp_path(folder) for folder in folders]
    for path in old + young:
        pq.write_table(pa.table({"x": [1]}), path)
    long_ago = time.time() - STALE_STAGE_SECONDS - 60
    for path in old:
        os.utime(path, (long_ago, long_ago))
    before = _ids(str(source))

    compact(str(source))

    assert not any(os.path.exists(path) for path in old)
    assert all(os.path.exists(path) for path in young)
    assert _ids(str(source)) == before
