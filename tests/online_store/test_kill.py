"""A `feast materialize` killed with SIGKILL mid-run, then rerun, converges."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

from tests.online_store.conftest import snapshot
from tests.online_store.feast_repo import RepoSpec, make_store
from tests.online_store.views import T0

DUCKDB = "offline_store.store.DuckDBParquetOfflineStore"
ROWS = 300_000
ENTITIES = 150_000


def _objects(parquet: Path) -> list[Any]:
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    return [
        driver,
        FeatureView(
            name="stats",
            entities=[driver],
            schema=[
                Field(name="driver_id", dtype=Int64),
                Field(name="rate", dtype=Float64),
                Field(name="trips", dtype=Int64),
                Field(name="label", dtype=String),
            ],
            source=FileSource(path=str(parquet), timestamp_field="event_ts"),
            ttl=timedelta(0),
        ),
    ]


@pytest.mark.slow
def test_sigkill_mid_materialize_then_rerun_converges(tmp_path: Path, module_redis: str) -> None:
    rng = np.random.default_rng(3)
    parquet = tmp_path / "stats.parquet"
    pq.write_table(
        pa.table(
            {
                "driver_id": pa.array(np.arange(ROWS) % ENTITIES, pa.int64()),
                "rate": rng.random(ROWS),
                "trips": rng.integers(0, 1000, ROWS),
                "label": pa.array(rng.integers(0, 10**6, ROWS).astype(str)),
                "event_ts": pa.array(
                    int(T0.timestamp() * 1e6) + rng.integers(0, 10**12, ROWS),
                    pa.timestamp("us", tz="UTC"),
                ),
            }
        ),
        parquet,
    )
    killed_url, clean_url = module_redis + "5", module_redis + "6"
    for url in (killed_url, clean_url):
        redis.Redis.from_url(url).flushdb()
    # Small chunks make the run long enough to be killed half-way.
    options = {"write_chunk_rows": 1000, "batch_rows": 10_000}
    killed = make_store(
        tmp_path / "killed",
        RepoSpec("p", killed_url, True, True, offline=DUCKDB, engine_options=options),
        lambda: _objects(parquet),
    )
    start, end = (T0 - timedelta(days=1)).isoformat(), (T0 + timedelta(days=30)).isoformat()
    feast_cli = Path(sys.executable).parent / "feast"
    proc = subprocess.Popen(
        [str(feast_cli), "-c", str(tmp_path / "killed"), "materialize", start, end],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis.from_url(killed_url)
    deadline = time.monotonic() + 120
    while client.dbsize() < 5_000:
        assert proc.poll() is None, "materialize finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = client.dbsize()
    assert 0 < partial < ENTITIES, "the kill did not land mid-run"
    assert not killed.get_feature_view("stats").materialization_intervals

    killed.materialize(T0 - timedelta(days=1), T0 + timedelta(days=30))
    clean = make_store(
        tmp_path / "clean",
        RepoSpec("p", clean_url, True, True, offline=DUCKDB),
        lambda: _objects(parquet),
    )
    clean.materialize(T0 - timedelta(days=1), T0 + timedelta(days=30))
    result = snapshot(killed_url)
    assert len(result) == ENTITIES
    assert result == snapshot(clean_url)
    assert killed.get_feature_view("stats").materialization_intervals
