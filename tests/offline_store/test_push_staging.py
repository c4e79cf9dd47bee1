"""Two-step pushes: a staged push is read by nobody, a commit lands every source or none.

What a reader reads is the listing both stores use (``source_files``: DuckDB's
``read_parquet`` list and Spark's explicit paths) and, for stock Feast, pyarrow's own
dataset discovery of a directory.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any
from unittest import mock

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from offline_store.connections import open_database
from offline_store.listing import source_files
from offline_store.parts import commit, discard
from offline_store.sources import DuckDBSettings, fetch_all, parquet_scan
from offline_store.writes import stage_batch, write_batch
from tests.offline_store.push_helpers import EXISTING, T0
from tests.offline_store.repo_helpers import DRIVER_SCHEMA, write_rows


def _row(driver_id: int) -> pa.Table:
    return pa.Table.from_pylist(
        [{**EXISTING[0], "driver_id": driver_id, "rate": 0.5}], schema=DRIVER_SCHEMA
    )


def _source(tmp_path: Path, layout: str) -> str:
    """A source of one row (driver 1) in the given layout; its resolved path."""
    if layout == "file":
        write_rows(tmp_path / "driver.parquet", DRIVER_SCHEMA, EXISTING)
        return str(tmp_path / "driver.parquet")
    if layout == "directory":
        write_rows(tmp_path / "driver" / "part-0.parquet", DRIVER_SCHEMA, EXISTING)
        return str(tmp_path / "driver")
    if layout == "glob":
        write_rows(tmp_path / "driver" / "part-0.parquet", DRIVER_SCHEMA, EXISTING)
        return str(tmp_path / "driver" / "*.parquet")
    if layout == "hive":
        schema = pa.schema([f for f in DRIVER_SCHEMA if f.name != "trips"])
        rows = [{k: v for k, v in EXISTING[0].items() if k != "trips"}]
        write_rows(tmp_path / "driver" / "trips=1" / "part-0.parquet", schema, rows)
        return str(tmp_path / "driver")
    return str(tmp_path / "new" / "driver.parquet")  # "missing": the push creates it


def _duckdb_ids(path: str) -> list[int]:
    files = source_files(path)
    if not files:
        return []
    con = open_database(DuckDBSettings(memory_limit="256MB", threads=1))
    try:
        rows = fetch_all(con, f"SELECT driver_id FROM {parquet_scan(files)} ORDER BY 1")
        return [int(r[0]) for r in rows]
    finally:
        con.close()


def _pyarrow_ids(path: str) -> list[int]:
    """What stock Feast's reader (a pyarrow dataset) finds in a directory source."""
    if not os.path.isdir(path):
        return _duckdb_ids(path)
    table = ds.dataset(path, format="parquet", partitioning="hive").to_table()
    return sorted(table.column("driver_id").to_pylist())


def _leftovers(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name.startswith(".") and p.is_file())


@pytest.mark.parametrize("layout", ["file", "directory", "glob", "hive", "missing"])
def test_a_staged_push_is_read_by_nobody_until_it_is_committed(tmp_path: Path, layout: str) -> None:
    path = _source(tmp_path, layout)
    before = _duckdb_ids(path)
    listed = source_files(path)

    staged = stage_batch(path, _row(2))

    assert [os.path.basename(f.tmp).startswith(".push-") for f in staged.files] == [True]
    assert all(os.path.exists(f.tmp) for f in staged.files)
    assert source_files(path) == listed
    assert _duckdb_ids(path) == before
    assert _pyarrow_ids(path) == before

    commit([staged])

    assert _duckdb_ids(path) == sorted([*before, 2])
    assert _pyarrow_ids(path) == sorted([*before, 2])
    assert len(source_files(path)) == len(listed) + 1
    assert _leftovers(tmp_path) == []


def test_a_commit_failing_on_its_second_source_leaves_neither_source_changed(
    tmp_path: Path,
) -> None:
    first, second = _source(tmp_path, "file"), _source(tmp_path, "directory")
    listed = {p: source_files(p) for p in (first, second)}
    batches = [stage_batch(first, _row(2)), stage_batch(second, _row(2))]
    real_replace = os.replace

    def no_room_in_second(src: Any, dst: Any) -> None:
        if os.path.dirname(dst) == second:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    with (
        mock.patch("os.replace", side_effect=no_room_in_second),
        pytest.raises(OSError, match="No space left"),
    ):
        commit(batches)

    assert [b.failed for b in batches] == [False, True]
    assert {p: source_files(p) for p in (first, second)} == listed
    assert _duckdb_ids(first) == _duckdb_ids(second) == [1]
    assert _leftovers(tmp_path) == []


def test_discarded_pushes_leave_nothing(tmp_path: Path) -> None:
    paths = [_source(tmp_path, "file"), _source(tmp_path, "hive")]
    batches = [stage_batch(p, _row(2)) for p in paths]
    discard(batches)
    assert [_duckdb_ids(p) for p in paths] == [[1], [1]]
    assert _leftovers(tmp_path) == []


def test_a_file_created_by_another_push_after_staging_takes_the_rows_as_a_part(
    tmp_path: Path,
) -> None:
    path = _source(tmp_path, "missing")
    staged = stage_batch(path, _row(2))
    write_batch(path, _row(3))  # another push creates the file first
    commit([staged])
    assert _duckdb_ids(path) == [2, 3]
    assert pq.read_table(path).column("driver_id").to_pylist() == [3]


def test_a_pandas_index_is_not_written_and_the_file_reads_back_into_pandas(
    tmp_path: Path,
) -> None:
    frame = pd.DataFrame(
        {
            "driver_id": [1, 2, 3],
            "event_timestamp": [T0] * 3,
            "created": [T0] * 3,
            "rate": [-1.0, 0.5, 0.7],
            "trips": [1, 2, 3],
        }
    )
    table = pa.Table.from_pandas(frame[frame.rate > 0])  # index [1, 2] kept as a column
    assert "__index_level_0__" in table.column_names

    written = write_batch(str(tmp_path / "new.parquet"), table)

    assert pq.read_schema(written).names == DRIVER_SCHEMA.names
    back = pq.read_table(written).to_pandas()
    assert list(back.index) == [0, 1]
    assert back["driver_id"].tolist() == [2, 3]
