"""A view whose event time is matched first runs its steps as statements of their own.

Within one statement DuckDB holds every step's memory at once (step 1's sorted rows, the
candidates' hash join, the final sort); as separate statements each step has the memory
limit to itself. The rows must not change with the shape.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from offline_store.connections import job_connection
from offline_store.entities import load_entities
from offline_store.pit_join import FeatureSpec, ViewSpec, build_pit_query
from offline_store.sources import DuckDBSettings, execute, fetch_all, parquet_scan

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _source(path: Path) -> None:
    rows = 400
    pq.write_table(
        pa.table(
            {
                "driver_id": pa.array([i % 20 for i in range(rows)], pa.int64()),
                # Two rows per (driver, time): the greater created time decides, and where
                # those tie too (one pair in three), the later row.
                "event_timestamp": pa.array(
                    [T0 + timedelta(hours=i // 40) for i in range(rows)], pa.timestamp("us", "UTC")
                ),
                "created": pa.array(
                    [
                        T0 + timedelta(hours=i // 40, seconds=(i // 20) % 2 * (i % 3))
                        for i in range(rows)
                    ],
                    pa.timestamp("us", "UTC"),
                ),
                "rate": pa.array([float(i) for i in range(rows)]),
            }
        ),
        path,
    )


def _view(path: Path, *, match_first: bool) -> ViewSpec:
    return ViewSpec(
        name="stats",
        scan_sql=parquet_scan(str(path), with_order_columns=True),
        column_map={},
        join_keys=(("driver_id", "driver_id"),),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
        features=(FeatureSpec("rate", "rate"),),
        ttl_micros=int(timedelta(hours=5) / timedelta(microseconds=1)),
        single_file=True,
        match_first=match_first,
    )


def _run(
    con: duckdb.DuckDBPyConnection, view: ViewSpec
) -> tuple[tuple[str, ...], list[tuple[object, ...]]]:
    loaded = load_entities(
        con,
        pa.table(
            {
                "driver_id": pa.array([d % 25 for d in range(60)], pa.int64()),
                "event_timestamp": pa.array(
                    [T0 + timedelta(minutes=37 * i) for i in range(60)], pa.timestamp("us", "UTC")
                ),
            }
        ),
    )
    query = build_pit_query(
        [view],
        loaded.columns,
        loaded.timestamp_column,
        min_ts=loaded.min_ts,
        max_ts=loaded.max_ts,
    )
    for statement in query.setup:
        execute(con, statement)
    return query.setup, fetch_all(con, query.sql)


def test_matched_first_steps_are_statements_of_their_own_with_the_same_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "stats.parquet"
    _source(path)
    settings = DuckDBSettings(memory_limit="256MB", temp_directory=str(tmp_path / "spill"))
    with job_connection(settings, reuse=False) as con:
        one_setup, one_rows = _run(con, _view(path, match_first=False))
    with job_connection(settings, reuse=False) as con:
        setup, rows = _run(con, _view(path, match_first=True))
    assert one_setup == ()
    # Step 1's matches, then the view's candidate rows, each into a temp table the query
    # reads, then the candidates that lose a tie deleted.
    assert len(setup) == 3
    assert all(s.startswith("CREATE OR REPLACE TEMP TABLE") for s in setup[:2])
    assert setup[2].startswith("DELETE FROM __v0")
    assert rows == one_rows
    matched = [r for r in rows if r[-1] is not None]
    assert 0 < len(matched) < len(rows)  # hits, and misses past the TTL or before any row
