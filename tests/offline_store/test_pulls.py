"""Materialization pulls: latest per entity in [start, end), streaming in bounded batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import FeatureStore

from foundation.errors import InvalidRequestError
from offline_store.job import DuckDBRetrievalJob, Query
from offline_store.sources import DuckDBSettings
from offline_store.store import DuckDBParquetOfflineStore, pull_settings
from tests.offline_store.repo_helpers import DRIVER_SCHEMA, make_store, three_views, write_rows

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


ROWS = [
    # driver 1: correction at the same event time (later created wins), then an exact tie
    {"driver_id": 1, "event_timestamp": h(1), "created": h(1), "rate": 0.1, "trips": 1},
    {"driver_id": 1, "event_timestamp": h(2), "created": h(2), "rate": 0.2, "trips": 2},
    {"driver_id": 1, "event_timestamp": h(2), "created": h(3), "rate": 0.3, "trips": 3},
    {"driver_id": 1, "event_timestamp": h(2), "created": h(2.5), "rate": 0.25, "trips": 25},
    # driver 2: the newest row is exactly at `end` and must be excluded ([start, end))
    {"driver_id": 2, "event_timestamp": h(1), "created": None, "rate": 0.4, "trips": 4},
    {"driver_id": 2, "event_timestamp": h(5), "created": h(5), "rate": 0.5, "trips": 5},
    # driver 3: only before `start`
    {"driver_id": 3, "event_timestamp": h(-1), "created": h(-1), "rate": 0.6, "trips": 6},
    # driver 4: exact tie on (event, created): the later row in the source wins
    {"driver_id": 4, "event_timestamp": h(3), "created": h(3), "rate": 0.7, "trips": 7},
    {"driver_id": 4, "event_timestamp": h(3), "created": h(3), "rate": 0.8, "trips": 8},
]


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    fs = make_store(tmp_path, three_views())
    write_rows(tmp_path / "data" / "driver.parquet", DRIVER_SCHEMA, ROWS)
    return fs


def _pull(fs: FeatureStore, latest: bool = True) -> DuckDBParquetOfflineStore:
    fv = fs.get_feature_view("driver_fv")
    method = (
        DuckDBParquetOfflineStore.pull_latest_from_table_or_query
        if latest
        else DuckDBParquetOfflineStore.pull_all_from_table_or_query
    )
    return method(  # type: ignore[return-value]
        fs.config,
        fv.batch_source,
        ["driver_id"],
        ["rate", "trips"],
        "event_timestamp",
        "created",
        h(0),
        h(5),
    )


def test_pull_latest_picks_greatest_event_then_created_time_within_window(
    store: FeatureStore,
) -> None:
    rows = _pull(store).to_arrow().sort_by("driver_id").to_pylist()
    assert [(r["driver_id"], r["rate"], r["trips"]) for r in rows] == [
        (1, 0.3, 3),
        (2, 0.4, 4),
        (4, 0.8, 8),
    ]
    assert rows[0]["event_timestamp"] == h(2)
    assert rows[0]["created"] == h(3)


@pytest.mark.parametrize("unit", ["ns", "us", "ms"])
def test_pulls_read_naive_timestamps_as_utc_in_every_unit(tmp_path: Path, unit: str) -> None:
    # pandas writes naive datetime64[ns] columns as Parquet timestamp[ns] without a zone:
    # DuckDB reads them as TIMESTAMP_NS, which it will not compare with a zoned bound.
    fs = make_store(tmp_path, three_views())
    naive = pa.schema(
        [
            field.with_type(pa.timestamp(unit)) if pa.types.is_timestamp(field.type) else field
            for field in DRIVER_SCHEMA
        ]
    )
    rows = [
        {
            **row,
            "event_timestamp": row["event_timestamp"].replace(tzinfo=None),
            "created": row["created"] and row["created"].replace(tzinfo=None),
        }
        for row in ROWS
    ]
    path = tmp_path / "data" / "driver.parquet"
    write_rows(path, naive, rows)
    assert pq.read_schema(path).field("event_timestamp").type == pa.timestamp(unit)
    latest = _pull(fs).to_arrow().sort_by("driver_id").to_pylist()
    assert [(r["driver_id"], r["rate"], r["event_timestamp"]) for r in latest] == [
        (1, 0.3, h(2)),
        (2, 0.4, h(1)),
        (4, 0.8, h(3)),
    ]
    every = _pull(fs, latest=False).to_arrow().sort_by([("driver_id", "ascending")])
    assert every.num_rows == 7  # [start, end): driver 2's row at end and driver 3's before
    assert min(every.column("event_timestamp").to_pylist()) == h(1)


def test_pull_latest_returns_the_columns_stock_feast_returns(
    store: FeatureStore, tmp_path: Path
) -> None:
    stock = make_store(tmp_path / "stock", three_views(), offline_store="file")
    write_rows(tmp_path / "stock" / "data" / "driver.parquet", DRIVER_SCHEMA, ROWS)
    fv = stock.get_feature_view("driver_fv")
    provider_store = stock._get_provider().offline_store  # type: ignore[attr-defined]
    theirs = provider_store.pull_latest_from_table_or_query(
        stock.config,
        fv.batch_source,
        ["driver_id"],
        ["rate", "trips"],
        "event_timestamp",
        "created",
        h(0),
        h(5),
    ).to_arrow()
    ours = _pull(store).to_arrow()
    assert sorted(ours.column_names) == sorted(theirs.column_names)


def test_iter_batches_streams_every_row_in_batches_of_at_most_max_rows(
    store: FeatureStore,
) -> None:
    job = _pull(store, latest=False)
    batches = list(job.iter_batches(2))
    assert batches
    assert all(b.num_rows <= 2 for b in batches)
    streamed = pa.Table.from_batches(batches)
    assert streamed.num_rows == 7  # 9 rows minus one before start, one at end
    # to_arrow gives Feast's nanosecond timestamps; the stream keeps DuckDB's microseconds
    # (one schema for every batch, whatever the range of the values).
    whole = job.to_arrow()
    assert streamed.cast(whole.schema).equals(whole)


def test_iter_batches_with_feast_types_streams_what_to_arrow_gives(store: FeatureStore) -> None:
    """What the training route and Arrow Flight send: Feast's nanosecond timestamps."""
    job = _pull(store, latest=False)
    streamed = pa.Table.from_batches(list(job.iter_batches(2, feast_types=True)))
    whole = job.to_arrow()
    assert pa.types.is_timestamp(whole.schema.field("event_timestamp").type)
    assert whole.schema.field("event_timestamp").type.unit == "ns"
    assert streamed.equals(whole)


def test_iter_batches_reports_the_latest_pull_row_count_before_the_first_batch(
    store: FeatureStore,
) -> None:
    totals: list[int] = []
    seen_before_first: list[list[int]] = []
    batches = []
    for batch in _pull(store).iter_batches(1, on_total=totals.append):
        seen_before_first.append(list(totals))
        batches.append(batch)
    assert totals == [3]  # drivers 1, 2 and 4 have a row in the window
    assert seen_before_first[0] == [3]
    assert sum(b.num_rows for b in batches) == 3


def test_iter_batches_does_not_count_a_pull_of_every_row(store: FeatureStore) -> None:
    totals: list[int] = []
    batches = _pull(store, latest=False).iter_batches(4, on_total=totals.append)
    rows = sum(b.num_rows for b in batches)
    assert rows == 7
    assert totals == []  # counting would cost a second scan of the window


def test_iter_batches_rejects_non_positive_batch_size(store: FeatureStore) -> None:
    with pytest.raises(InvalidRequestError, match="max_rows"):
        next(_pull(store).iter_batches(0))


def test_pull_reports_missing_columns_by_name(store: FeatureStore) -> None:
    fv = store.get_feature_view("driver_fv")
    job = DuckDBParquetOfflineStore.pull_latest_from_table_or_query(
        store.config, fv.batch_source, ["driver_id"], ["nope"], "event_timestamp", None, h(0), h(5)
    )
    with pytest.raises(InvalidRequestError, match="nope"):
        job.to_arrow()


_MEMORY_SCRIPT = """
import json, resource, sys
from datetime import datetime, timezone
from feast import FeatureStore
from offline_store.store import DuckDBParquetOfflineStore
fs = FeatureStore(repo_path=sys.argv[1])
fv = fs.get_feature_view("driver_fv")
job = DuckDBParquetOfflineStore.pull_latest_from_table_or_query(
    fs.config, fv.batch_source, ["driver_id"], ["rate", "trips"], "event_timestamp", "created",
    datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
rows = 0
biggest = 0
for batch in job.iter_batches(10_000):
    rows += batch.num_rows
    biggest = max(biggest, batch.num_rows)
print(json.dumps({"rows": rows, "biggest": biggest, "base_mb": base,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def test_iter_batches_stays_within_the_duckdb_memory_limit(tmp_path: Path) -> None:
    make_store(
        tmp_path,
        three_views(),
        extra_offline=f"  memory_limit: 100MB\n  threads: 1\n  temp_directory: {tmp_path}/spill\n",
    )
    n, keys = 3_000_000, 1_500_000
    idx = pa.array(range(n), pa.int64())
    table = pa.table(
        {
            "driver_id": pa.compute.bit_wise_and(idx, pa.scalar(2**40 - 1)).cast(pa.int64()),
            "event_timestamp": pa.array(
                [T0 + timedelta(seconds=i % 997) for i in range(n)], pa.timestamp("us", "UTC")
            ),
            "created": pa.array([T0] * n, pa.timestamp("us", "UTC")),
            "rate": pa.array([float(i) for i in range(n)], pa.float64()),
            "trips": idx,
        }
    )
    table = table.set_column(0, "driver_id", pa.compute.remainder(idx, keys))
    pq.write_table(table, tmp_path / "data" / "driver.parquet", row_group_size=100_000)
    del table, idx
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["rows"] == keys
    assert result["biggest"] <= 10_000
    # Feast's imports alone peak around 450 MB; streaming 1.5M latest rows out of 3M (120 MB
    # of columns) under a 100 MB DuckDB limit must add little on top of that.
    assert result["rss_mb"] - result["base_mb"] < 150, result


@pytest.mark.parametrize("unit", ["us", "ns"])
@pytest.mark.parametrize("single_file", [False, True])
@pytest.mark.parametrize("created", ["created", None])
@pytest.mark.parametrize("keys", [["k1"], ["k1", "k2"], []])
def test_aggregate_latest_query_equals_the_window_query(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    keys: list[str],
    created: str | None,
    single_file: bool,
    unit: str,
) -> None:
    """The hash-aggregate form picks exactly the rows the QUALIFY window picks.

    Many exact (event, created) ties, null created times, +/-infinity created times, null
    join keys, several files and row groups; in microseconds, and in nanoseconds (pandas'
    default) where rows differ by less than a microsecond.
    """
    import random

    import duckdb

    from offline_store import pulls

    rnd = random.Random(7)
    per_second = 1_000_000 if unit == "us" else 1_000_000_000
    base = int(T0.timestamp()) * per_second
    for fi in range(1 if single_file else 3):
        n = 300
        created_values = [
            rnd.choice([None, base, base + rnd.randint(0, 3), -(2**63) + 1, 2**63 - 1, base + 7])
            for _ in range(n)
        ]
        table = pa.table(
            {
                "k1": pa.array([rnd.randint(0, 4) for _ in range(n)]),
                "k2": pa.array([rnd.choice(["a", "b", None]) for _ in range(n)]),
                "event_timestamp": pa.array(
                    [
                        base + rnd.randint(0, 5) * per_second + rnd.randint(0, 2) * (unit == "ns")
                        for _ in range(n)
                    ],
                    pa.timestamp(unit, tz="UTC"),
                ),
                # naive: DuckDB reads it as TIMESTAMP; 2**63-1 / -(2**63)+1 are +/-infinity
                "created": pa.array(created_values, pa.timestamp(unit)),
                "v": pa.array(range(fi * 1000, fi * 1000 + n)),
            }
        )
        pq.write_table(table, tmp_path / f"p{fi}.parquet", row_group_size=50)
    pattern = str(tmp_path / ("p0.parquet" if single_file else "*.parquet"))
    scan = f"read_parquet('{pattern}', union_by_name=true, filename=true, file_row_number=true)"
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")

    def latest(aggregate: bool) -> pa.Table:
        if not aggregate:
            monkeypatch.setattr(pulls, "_EPOCH_FUNCTION", {})
        query = pulls.build_pull_query(
            con,
            scan,
            join_key_columns=keys,
            feature_name_columns=["v"],
            timestamp_field="event_timestamp",
            created_timestamp_column=created,
            start_date=T0 - timedelta(days=1),
            end_date=T0 + timedelta(days=1),
            latest_only=True,
            single_file=single_file,
        )
        monkeypatch.undo()
        assert ("QUALIFY" not in query.sql) == aggregate
        for statement in query.setup:
            con.execute(statement).fetchall()
        rows = con.sql(query.sql).to_arrow_table().sort_by([("v", "ascending")])
        # The count the progress bar's ETA rests on is exact in both forms.
        assert query.count_sql is not None
        assert con.execute(query.count_sql).fetchall() == [(rows.num_rows,)]
        return rows

    window = latest(aggregate=False)
    groups = {tuple(row.values()) for row in window.select(keys).to_pylist()}
    assert window.num_rows == (len(groups) if keys else 1)
    assert latest(aggregate=True).equals(window)


def test_a_job_runs_its_setup_on_setup_threads_and_streams_on_threads() -> None:
    """A latest pull picks its winners (setup) on every core, then streams on fewer."""
    settings = DuckDBSettings(threads=1, setup_threads=2)

    def prepare(con: object) -> Query:
        return Query(
            "SELECT setup_threads, current_setting('threads') AS streaming_threads FROM seen",
            setup=("CREATE TEMP TABLE seen AS SELECT current_setting('threads') AS setup_threads",),
        )

    for rows in (
        DuckDBRetrievalJob(settings, prepare).to_arrow().to_pylist(),
        [r for b in DuckDBRetrievalJob(settings, prepare).iter_batches(10) for r in b.to_pylist()],
    ):
        assert rows == [{"setup_threads": 2, "streaming_threads": 1}]


def test_pull_settings_stream_on_half_the_cores_and_pick_winners_on_all(tmp_path: Path) -> None:
    store = make_store(tmp_path / "repo", three_views())
    settings = pull_settings(store.config)
    cores = len(os.sched_getaffinity(0))
    assert (settings.threads, settings.setup_threads) == (max(1, cores // 2), cores)
