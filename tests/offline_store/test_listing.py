"""Which files a Parquet source reads: one listing, natural order equal to DuckDB's SQL order,
hidden names skipped, and file names with glob characters read as themselves."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.errors import InvalidRequestError
from offline_store.listing import file_order_key, source_files
from offline_store.sources import FILE_ORDER, parquet_scan
from offline_store.writes import write_batch
from tests.offline_store.test_store import T0

# Digits (short and longer than DuckDB's HUGEINT), letters, separators, non-ASCII.
_CHUNKS = st.one_of(
    st.from_regex(r"[0-9]{1,3}", fullmatch=True),
    st.from_regex(r"[0-9]{38,41}", fullmatch=True),
    st.sampled_from(["a", "b", "part-", ".", "/", "_", " ", "é", "Z", "0", "00", "x.parquet"]),
)
_NAMES = st.lists(st.lists(_CHUNKS, min_size=1, max_size=6).map("".join), min_size=2, max_size=12)


@settings(max_examples=150, deadline=None)
@given(names=_NAMES)
def test_natural_order_in_python_equals_duckdbs_file_order(names: list[str]) -> None:
    # The Spark store ranks files with file_order_key; the DuckDB store sorts by FILE_ORDER
    # in SQL. Ties across files must go the same way in both.
    con = duckdb.connect()
    con.execute("CREATE TABLE t (filename VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?)", [[n] for n in names])
    in_sql = [
        r[0]
        for r in con.execute(f"SELECT filename FROM t ORDER BY {FILE_ORDER}, filename").fetchall()
    ]
    assert sorted(names, key=file_order_key) == in_sql


def _write(path: Path, rate: float, minutes: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "driver_id": [1],
            "event_timestamp": [T0 + timedelta(minutes=minutes)],
            "created": [T0],
            "rate": [rate],
            "trips": [1],
        }
    ).to_parquet(path)


def test_a_directory_is_listed_recursively_in_natural_order_without_hidden_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    for name in ("part-10.parquet", "part-2.parquet", "2024/01/a.parquet", "2024/1/b.parquet"):
        _write(data / name, 0.1)
    # Notebook checkpoints, job scratch folders, dotfiles and _-files are not data.
    for name in (".ipynb_checkpoints/part-2-checkpoint.parquet", "_temporary/0/x.parquet",
                 ".part-3.parquet", "_part-4.parquet", "notes.txt"):  # fmt: skip
        _write(data / name, 9.9)
    assert source_files(str(data)) == [
        str(data / "2024/01/a.parquet"),
        str(data / "2024/1/b.parquet"),
        str(data / "part-2.parquet"),
        str(data / "part-10.parquet"),
    ]
    # A glob lists the same way; a ** glob is recursive; a hidden folder the user names is read.
    assert source_files(str(data / "**" / "*.parquet")) == source_files(str(data))
    assert source_files(str(data / "*.parquet")) == [
        str(data / "part-2.parquet"),
        str(data / "part-10.parquet"),
    ]
    assert source_files(str(data / "_temporary" / "0")) == [str(data / "_temporary/0/x.parquet")]
    # A relative glob (an entity path, say) is relative to the working directory.
    monkeypatch.chdir(data)
    flat = [str(data / "part-2.parquet"), str(data / "part-10.parquet")]
    assert source_files("*.parquet") == flat
    # A pattern that only matches hidden names says why it reads nothing.
    with pytest.raises(InvalidRequestError, match=r"starting with '\.' or '_' below it"):
        parquet_scan(str(data / "_part-*.parquet"))


def test_a_file_is_listed_with_its_pushed_parts_in_push_order(tmp_path: Path) -> None:
    path = tmp_path / "rates.parquet"
    _write(path, 0.1)
    table = pq.read_table(path)
    for _ in range(11):  # part numbers past 9: push order is still natural order
        write_batch(str(path), table)
    files = source_files(str(path))
    assert files[0] == str(path)
    assert len(files) == 12
    assert files[1:] == sorted(files[1:])  # zero-padded part numbers, in push order


def test_file_names_with_glob_characters_read_as_themselves(tmp_path: Path) -> None:
    # DuckDB globs every path it is given: x[1].parquet unescaped would read x1.parquet.
    data = tmp_path / "data"
    _write(data / "x[1].parquet", 0.1)
    _write(data / "x1.parquet", 0.2)
    _write(data / "s*.parquet", 0.3)
    _write(data / "q?.parquet", 0.4)
    con = duckdb.connect()
    for name, rate in (("x[1].parquet", 0.1), ("x1.parquet", 0.2), ("s*.parquet", 0.3)):
        scan = parquet_scan([str(data / name)], with_order_columns=True)
        assert con.execute(f"SELECT filename, rate FROM {scan}").fetchall() == [
            (str(data / name), rate)
        ]
    rows = con.execute(f"SELECT rate FROM {parquet_scan(str(data / '**' / '*.parquet'))}")
    assert sorted(r[0] for r in rows.fetchall()) == [0.1, 0.2, 0.3, 0.4]


def test_double_star_does_not_enter_symlinked_folders(tmp_path: Path) -> None:
    # As DuckDB's glob: a link back up would otherwise list the same file forty times (the
    # glob module follows it until the kernel's loop limit) and duplicate its rows.
    data = tmp_path / "data"
    _write(data / "2024" / "a.parquet", 0.1)
    (data / "2024" / "up").symlink_to(data)
    (data / "latest").symlink_to(data / "2024")
    assert source_files(str(data)) == [str(data / "2024" / "a.parquet")]
    # A one-level wildcard names each folder it matches, links included (DuckDB's too).
    assert source_files(str(data / "*" / "*.parquet")) == [
        str(data / "2024" / "a.parquet"),
        str(data / "latest" / "a.parquet"),
    ]
