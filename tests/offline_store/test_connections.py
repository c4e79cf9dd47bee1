"""Jobs reuse DuckDB databases: one job at a time, nothing of one job visible to the next,
files rewritten between jobs read afresh, and failed, locked or inherited databases never
handed out again."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from offline_store.connections import idle_databases, job_connection
from offline_store.sandbox import lock_down
from offline_store.sources import DuckDBSettings, fetch_all
from offline_store.store import settings_from_config
from tests.offline_store.repo_helpers import DRIVER_SCHEMA, make_store, three_views, write_rows
from tests.offline_store.test_store import DRIVER_ROWS, ENTITIES, EXPECTED, FEATURES, T0, _rows


@pytest.fixture
def settings(tmp_path: Path) -> DuckDBSettings:
    # A spill folder of its own: no other test's databases share these settings.
    return DuckDBSettings(memory_limit="512MB", temp_directory=str(tmp_path / "spill"), threads=1)


def _temp_objects(con: duckdb.DuckDBPyConnection) -> int:
    tables = fetch_all(
        con, "SELECT count(*) FROM duckdb_tables() WHERE temporary AND NOT internal"
    )[0][0]
    views = fetch_all(con, "SELECT count(*) FROM duckdb_views() WHERE temporary AND NOT internal")[
        0
    ][0]
    return int(tables) + int(views)


@pytest.mark.parametrize("prefetch", [True, False])
def test_every_jobs_connection_has_its_databases_parquet_settings(
    tmp_path: Path, prefetch: bool
) -> None:
    """A job works on a cursor of the pooled database, and Parquet's footer cache and
    prefetching are per-connection settings: set on the database's own connection alone,
    jobs ran without the cache and, on local pulls, prefetched column chunks anyway (27 MB
    more at the peak of a 1M-row materialize)."""
    settings = DuckDBSettings(
        memory_limit="256MB", temp_directory=str(tmp_path / "spill"), parquet_prefetch=prefetch
    )
    for _ in range(2):  # a new database, then the same one reused
        with job_connection(settings) as con:
            assert fetch_all(con, "SELECT current_setting('parquet_metadata_cache')")[0][0]
            disabled = fetch_all(con, "SELECT current_setting('disable_parquet_prefetching')")
            assert disabled[0][0] is (not prefetch)
    assert idle_databases(settings) == 1


def test_the_next_job_gets_the_same_database_and_none_of_the_last_jobs_objects(
    settings: DuckDBSettings,
) -> None:
    with job_connection(settings) as con:
        con.execute("CREATE TEMP TABLE rows AS SELECT 1 AS x")
        con.execute("CREATE TEMP VIEW v AS SELECT 2 AS y")
        con.register("frame", pa.table({"z": [3]}))
        first = fetch_all(con, "SELECT current_setting('temp_directory')")[0][0]
        assert _temp_objects(con) == 3  # the registered frame is a temp view too
    assert idle_databases(settings) == 1
    with job_connection(settings) as con:
        assert idle_databases(settings) == 0  # lent out: one job at a time
        assert _temp_objects(con) == 0
        with pytest.raises(duckdb.CatalogException):
            con.execute("SELECT * FROM frame")
        assert fetch_all(con, "SELECT current_setting('temp_directory')")[0][0] == first
        assert fetch_all(con, "SELECT current_setting('TimeZone')")[0][0] == "UTC"
    assert idle_databases(settings) == 1


def test_concurrent_jobs_get_databases_of_their_own(settings: DuckDBSettings) -> None:
    with job_connection(settings) as a, job_connection(settings) as b:
        a.execute("CREATE TEMP TABLE mine AS SELECT 1 AS x")
        # Each has the memory limit to itself, and its own temp catalog.
        assert _temp_objects(b) == 0
    assert idle_databases(settings) == 2
    with job_connection(settings), job_connection(settings), job_connection(settings):
        pass
    assert idle_databases(settings) == 2  # no more than IDLE_PER_SETTINGS wait


def test_a_failed_job_closes_its_database(settings: DuckDBSettings) -> None:
    with pytest.raises(duckdb.Error), job_connection(settings) as con:
        con.execute("SELECT * FROM no_such_table")
    assert idle_databases(settings) == 0


def test_a_locked_database_is_never_handed_out_again(settings: DuckDBSettings) -> None:
    with job_connection(settings) as con:
        lock_down(con, [])
    assert idle_databases(settings) == 0
    with job_connection(settings) as con:
        assert fetch_all(con, "SELECT current_setting('enable_external_access')")[0][0] is True


# A process that ran a job (or hashed strings for statistics) forks; the child runs a job of
# its own and exits normally (interpreter finalization frees what it inherited, which for a
# DuckDB database is a crash); the parent goes on. Prints the child's exit status.
_FORK_SCRIPT = """
import os, sys
import pyarrow as pa
from foundation.hyperloglog import string_hashes
from offline_store.connections import idle_databases, job_connection
from offline_store.sources import DuckDBSettings, fetch_all

settings = DuckDBSettings(memory_limit="256MB", temp_directory=sys.argv[1], threads=1)
if sys.argv[2] == "job":
    with job_connection(settings):
        pass
    assert idle_databases(settings) == 1
else:
    string_hashes(pa.array(["a", "b"]))
pid = os.fork()
if pid == 0:
    with job_connection(settings) as con:
        assert fetch_all(con, "SELECT 40 + 2")[0][0] == 42
    sys.exit(0)
_, status = os.waitpid(pid, 0)
with job_connection(settings) as con:
    assert fetch_all(con, "SELECT 1")[0][0] == 1
print(status)
"""


@pytest.mark.parametrize("before", ["job", "string statistics"])
def test_a_forked_child_runs_jobs_and_exits_cleanly(tmp_path: Path, before: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT, str(tmp_path), before.split()[0]],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.returncode == 0, done.stderr
    status = int(done.stdout.split()[-1])
    assert os.WIFEXITED(status), f"the child died by signal {os.WTERMSIG(status)}"
    assert os.WEXITSTATUS(status) == 0


def test_training_reads_a_source_file_rewritten_in_place_between_calls(tmp_path: Path) -> None:
    spill = f"  temp_directory: {tmp_path}/spill\n"
    fs = make_store(tmp_path, three_views(), extra_offline=spill)
    source = tmp_path / "data" / "driver.parquet"
    write_rows(source, DRIVER_SCHEMA, DRIVER_ROWS)
    stat = source.stat()
    assert _rows(fs.get_historical_features(entity_df=ENTITIES, features=FEATURES).to_arrow()) == (
        EXPECTED
    )
    settings = settings_from_config(fs.config)
    assert idle_databases(settings) == 1
    # Same size, same modification time, other values: the footer cache must not be trusted.
    changed = [{**row, "rate": row["rate"] + 1.0, "trips": row["trips"] + 5} for row in DRIVER_ROWS]
    write_rows(source, DRIVER_SCHEMA, changed)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.stat().st_size == stat.st_size
    again = fs.get_historical_features(entity_df=ENTITIES, features=FEATURES).to_arrow()
    assert idle_databases(settings) == 1  # the same database answered
    expected = [
        (key, label, None if rate is None else rate + 1.0, None if trips is None else trips + 5)
        for key, label, rate, trips in EXPECTED
    ]
    assert _rows(again) == expected


def test_jobs_on_a_reused_database_give_each_their_own_answer(tmp_path: Path) -> None:
    spill = f"  temp_directory: {tmp_path}/spill\n"
    fs = make_store(tmp_path, three_views(), extra_offline=spill)
    write_rows(tmp_path / "data" / "driver.parquet", DRIVER_SCHEMA, DRIVER_ROWS)
    later = ENTITIES.assign(event_timestamp=ENTITIES["event_timestamp"] + timedelta(minutes=1))
    fewer = pd.DataFrame({"driver_id": [2], "event_timestamp": [T0], "label": ["x"]})
    answers = [
        _rows(fs.get_historical_features(entity_df=frame, features=FEATURES).to_arrow())
        for frame in (ENTITIES, later, fewer, ENTITIES)
    ]
    assert answers[0] == answers[3] == EXPECTED
    assert answers[1] == [
        (1, "a", 0.7, 11),  # now at the second row's time
        (2, "b", None, None),  # 6 minutes after its row: past the 5-minute TTL
        (1, "c", None, None),
        (1, "d", 0.7, 11),
        (3, "e", None, None),
    ]
    assert answers[2] == [(2, "x", 0.9, 20)]
    assert idle_databases(settings_from_config(fs.config)) == 1
