"""Offline writes for push: rows are appended to the Parquet source and visible to joins."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast.data_source import PushMode

from foundation.errors import SchemaMismatchError
from offline_store.listing import source_files
from offline_store.store import DuckDBParquetOfflineStore
from offline_store.writes import write_batch
from tests.offline_store.push_helpers import EXISTING, T0, latest_rate, push_store
from tests.offline_store.repo_helpers import DRIVER_SCHEMA, write_rows


def _pushed_frame(rate: float, minutes: int = 0) -> pd.DataFrame:
    # Columns deliberately in another order than the source file.
    return pd.DataFrame(
        {
            "rate": [rate],
            "trips": [2],
            "driver_id": [1],
            "created": [T0],
            "event_timestamp": [T0 + timedelta(minutes=minutes)],
        }
    )


@pytest.mark.parametrize("layout", ["file", "directory"])
def test_push_to_offline_appends_and_later_rows_win_exact_ties(tmp_path: Path, layout: str) -> None:
    path = "data/driver.parquet" if layout == "file" else "data/driver"
    fs = push_store(tmp_path, path)
    target = tmp_path / "data" / ("driver.parquet" if layout == "file" else "driver/0.parquet")
    write_rows(target, DRIVER_SCHEMA, EXISTING)

    fs.push("driver_push", _pushed_frame(0.9), to=PushMode.OFFLINE)

    rows = pq.read_table(source_files(str(tmp_path / path))).sort_by("rate").to_pylist()
    assert [r["rate"] for r in rows] == [0.1, 0.9]
    # Same (event_ts, created_ts) as the existing row: the pushed row is later in the source.
    assert latest_rate(fs) == 0.9


def test_push_with_wrong_columns_writes_nothing(tmp_path: Path) -> None:
    fs = push_store(tmp_path, "data/driver.parquet")
    write_rows(tmp_path / "data" / "driver.parquet", DRIVER_SCHEMA, EXISTING)
    before = (tmp_path / "data" / "driver.parquet").read_bytes()
    view = fs.get_feature_view("driver_fv")
    bad = pa.Table.from_pandas(_pushed_frame(0.9).drop(columns=["trips"]), preserve_index=False)
    with pytest.raises(SchemaMismatchError, match="trips"):
        DuckDBParquetOfflineStore.offline_write_batch(fs.config, view, bad, None)
    uncastable = pa.Table.from_pandas(
        _pushed_frame(0.9).assign(trips=["many"]), preserve_index=False
    )
    with pytest.raises(SchemaMismatchError):
        DuckDBParquetOfflineStore.offline_write_batch(fs.config, view, uncastable, None)
    assert (tmp_path / "data" / "driver.parquet").read_bytes() == before


def test_write_batch_to_a_glob_adds_a_matching_file(tmp_path: Path) -> None:
    write_rows(tmp_path / "g" / "part-0.parquet", DRIVER_SCHEMA, EXISTING)
    new = pa.Table.from_pandas(_pushed_frame(0.5), preserve_index=False)
    written = write_batch(str(tmp_path / "g" / "part-*.parquet"), new)
    assert Path(written).name.startswith("part-")
    assert pq.read_table(tmp_path / "g").num_rows == 2


def test_push_into_hive_partitions_lands_in_the_right_partition(tmp_path: Path) -> None:
    fs = push_store(tmp_path, "data/hive")
    for region in ("north", "south"):
        part = tmp_path / "data" / "hive" / f"region={region}"
        write_rows(part / "0.parquet", DRIVER_SCHEMA, EXISTING)
    fs.push(
        "driver_push", _pushed_frame(0.9, minutes=5).assign(region=["south"]), to=PushMode.OFFLINE
    )
    south = pq.read_table(tmp_path / "data" / "hive" / "region=south")
    north = pq.read_table(tmp_path / "data" / "hive" / "region=north")
    assert sorted(south["rate"].to_pylist()) == [0.1, 0.9]
    assert north["rate"].to_pylist() == [0.1]
    assert latest_rate(fs) == 0.9


def test_a_push_takes_its_schema_from_the_files_readers_read(tmp_path: Path) -> None:
    # A job's scratch copy with other column types sits in _temporary/ (and sorts before the
    # data by name); readers skip it, so the push must not take its schema from it.
    fs = push_store(tmp_path, "data/driver")
    write_rows(tmp_path / "data" / "driver" / "part-0.parquet", DRIVER_SCHEMA, EXISTING)
    scratch = pa.Table.from_pylist(EXISTING, schema=DRIVER_SCHEMA)
    scratch = scratch.set_column(
        scratch.schema.get_field_index("trips"), "trips", pa.array(["x"] * len(EXISTING))
    )
    (tmp_path / "data" / "driver" / "_temporary").mkdir()
    pq.write_table(scratch, tmp_path / "data" / "driver" / "_temporary" / "part-0.parquet")

    fs.push("driver_push", _pushed_frame(0.9), to=PushMode.OFFLINE)

    files = source_files(str(tmp_path / "data" / "driver"))
    assert len(files) == 2
    assert pq.read_schema(files[-1]).field("trips").type == DRIVER_SCHEMA.field("trips").type
    assert latest_rate(fs) == 0.9


@pytest.mark.parametrize("layout", ["file", "directory"])
def test_a_filtered_dataframe_pushed_through_feast_lands_without_its_index(
    tmp_path: Path, layout: str
) -> None:
    path = "data/driver.parquet" if layout == "file" else "data/driver"
    fs = push_store(tmp_path, path)
    target = tmp_path / ("data/driver.parquet" if layout == "file" else "data/driver/0.parquet")
    write_rows(target, DRIVER_SCHEMA, EXISTING)
    frame = pd.concat(
        [_pushed_frame(-1.0), _pushed_frame(0.7, minutes=5), _pushed_frame(0.9, minutes=10)],
        ignore_index=True,
    )
    kept = frame[frame.rate > 0]  # index [1, 2]: from_pandas stores it as a column
    assert "__index_level_0__" in pa.Table.from_pandas(kept).column_names

    fs.push("driver_push", kept, to=PushMode.OFFLINE)

    files = source_files(str(tmp_path / path))
    assert len(files) == 2
    assert [pq.read_schema(f).names for f in files] == [DRIVER_SCHEMA.names] * 2
    assert sorted(pq.read_table(files).column("rate").to_pylist()) == [0.1, 0.7, 0.9]
    assert latest_rate(fs) == 0.9
