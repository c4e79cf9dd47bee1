"""The Spark engine writes Redis byte for byte like the DuckDB-fed engine, from the executors.

Same data, separate Redis DBs: the DuckDB store with the streaming engine (itself checked
against stock Feast in test_differential.py) is the oracle for the Spark store with the Spark
engine; on a typed data set (every supported type, compound and string keys, field mapping,
ties) and on the example repo (feature_repo/). A kill -9 of a Spark ``feast materialize``
half-way, then a rerun, converges to the clean run's bytes.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
import yaml
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource
from feast.data_source import DataSource
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

from offline_store.statistics import open_log
from online_store.progress import ProgressEvent, subscribe
from tests.online_store.conftest import snapshot
from tests.online_store.data import T0, typed_objects, write_typed_parquet
from tests.online_store.feast_repo import RepoSpec, make_store, write_repo

DUCKDB = "offline_store.store.DuckDBParquetOfflineStore"
SPARK = "offline_store.spark.SparkOfflineStore"
SPARK_ENGINE = "online_store.spark.SparkMaterializationEngine"
START = T0 - timedelta(days=1)
END = T0 + timedelta(days=20)
ROOT = Path(__file__).resolve().parents[2]


def spark_repo(
    path: Path, redis_url: str, objects: Any, project: str = "p", **engine: Any
) -> FeatureStore:
    """A repo on the Spark offline store and the Spark engine, with our Redis store."""
    write_repo(path, RepoSpec(project, redis_url, True, True, offline=SPARK))
    config = yaml.safe_load((path / "feature_store.yaml").read_text())
    config["batch_engine"] = {"type": SPARK_ENGINE, **engine}
    (path / "feature_store.yaml").write_text(yaml.safe_dump(config))
    store = FeatureStore(repo_path=str(path))
    store.apply(list(objects()))
    return store


def test_spark_engine_writes_the_duckdb_engines_bytes(
    tmp_path: Path, module_redis: str, spark: Any
) -> None:
    parquet = tmp_path / "data" / "typed.parquet"
    write_typed_parquet(parquet, n=4000, entities=600, seed=7)
    objects = typed_objects(parquet)
    duck = make_store(
        tmp_path / "duck", RepoSpec("p", module_redis + "2", True, True, offline=DUCKDB), objects
    )
    ours = spark_repo(tmp_path / "spark", module_redis + "3", objects)
    for url in (module_redis + "2", module_redis + "3"):
        redis.Redis.from_url(url).flushdb()
    events: list[ProgressEvent] = []
    unsubscribe = subscribe(events.append)
    try:
        duck.materialize(START, END)
        events.clear()
        ours.materialize(START, END)
    finally:
        unsubscribe()
    want = snapshot(module_redis + "2")
    got = snapshot(module_redis + "3")
    assert len(want) > 1000
    assert got == want
    # Progress: a total per view, and the rows written reach it.
    by_view: dict[str, ProgressEvent] = {}
    for event in events:
        by_view[event.view] = event
    assert by_view
    for event in by_view.values():
        assert event.rows_total is not None
        assert event.rows_done == event.rows_total
    assert all(fv.materialization_intervals for fv in ours.list_feature_views())
    _assert_same_statistics(duck, ours)
    # A rerun is idempotent (the never-older rule skips every row).
    ours.materialize(START, END)
    assert snapshot(module_redis + "3") == want


def _assert_same_statistics(duck: FeatureStore, ours: FeatureStore) -> None:
    """The executors' merged profiles equal the DuckDB engine's single-stream profile."""
    runs = []
    for store in (duck, ours):
        log, engine = open_log(store)
        try:
            runs.append(log.latest_by_subject("feature_view"))
        finally:
            engine.dispose()
    want, got = runs
    assert want
    assert set(got) == set(want)
    for view, run in want.items():
        assert got[view].row_count == run.row_count > 0
        theirs = {c.name: c for c in run.columns}
        mine = {c.name: c for c in got[view].columns}
        assert set(mine) == set(theirs)
        for name, column in theirs.items():
            other = mine[name]
            assert (other.count, other.nulls, other.approx_distinct) == (
                column.count,
                column.nulls,
                column.approx_distinct,
            ), name
            assert (other.min, other.max, other.top) == (column.min, column.max, column.top)
            assert other.histogram == column.histogram, name
            if column.mean is not None:
                assert other.mean == pytest.approx(column.mean, rel=1e-9)


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_spark_engine_on_the_example_repo_matches_duckdb(
    tmp_path: Path, module_redis: str, spark: Any
) -> None:
    data = tmp_path / "data"
    end = datetime(2026, 11, 1, tzinfo=UTC)
    _load(ROOT / "feature_repo" / "generate.py", "_engine_example_generate").generate(
        data, rows=3000, seed=3, end=end
    )
    definitions = _load(ROOT / "feature_repo" / "definitions.py", "_engine_example_definitions")
    kinds = (Entity, DataSource, FeatureView, OnDemandFeatureView, FeatureService)

    def objects() -> list[Any]:
        return [o for o in vars(definitions).values() if isinstance(o, kinds)]

    for name in ("duck", "spark"):
        (tmp_path / name).mkdir()
        os.symlink(data, tmp_path / name / "data")
    duck = make_store(
        tmp_path / "duck",
        RepoSpec("rides", module_redis + "4", True, True, offline=DUCKDB),
        objects,
    )
    ours = spark_repo(tmp_path / "spark", module_redis + "5", objects, project="rides")
    for url in (module_redis + "4", module_redis + "5"):
        redis.Redis.from_url(url).flushdb()
    duck.materialize(end - timedelta(days=60), end)
    ours.materialize(end - timedelta(days=60), end)
    want = snapshot(module_redis + "4")
    assert len(want) > 100
    assert snapshot(module_redis + "5") == want


def test_spark_engine_on_a_redis_cluster_writes_the_same_hashes(
    tmp_path: Path,
    module_redis: str,
    spark: Any,
    cluster: Any,
) -> None:
    parquet = tmp_path / "data" / "typed.parquet"
    write_typed_parquet(parquet, n=2000, entities=300, seed=9)
    objects = typed_objects(parquet)
    duck = make_store(
        tmp_path / "duck", RepoSpec("p", module_redis + "6", True, True, offline=DUCKDB), objects
    )
    redis.Redis.from_url(module_redis + "6").flushdb()
    duck.materialize(START, END)
    node = cluster.get_nodes()[0]
    path = tmp_path / "spark"
    ours = spark_repo(path, module_redis + "6", objects)
    config = yaml.safe_load((path / "feature_store.yaml").read_text())
    config["online_store"]["connection_string"] = f"{node.host}:{node.port}"
    config["online_store"]["redis_type"] = "redis_cluster"
    (path / "feature_store.yaml").write_text(yaml.safe_dump(config))
    ours = FeatureStore(repo_path=str(path))
    ours.materialize(START, END)
    want = snapshot(module_redis + "6")
    got = {key: cluster.hgetall(key) for key in cluster.scan_iter(count=10_000)}
    assert len(want) > 100
    assert got == want
    # The keys really are spread over the three nodes.
    per_node = [n.redis_connection.dbsize() for n in cluster.get_nodes()]
    assert all(count > 0 for count in per_node), per_node


def test_driver_never_collects_the_rows(tmp_path: Path, module_redis: str, spark: Any) -> None:
    parquet = tmp_path / "data" / "typed.parquet"
    write_typed_parquet(parquet, n=500, entities=100, seed=2)
    ours = spark_repo(tmp_path / "spark", module_redis + "7", typed_objects(parquet))
    redis.Redis.from_url(module_redis + "7").flushdb()
    from pyspark.sql import DataFrame

    # Only the per-partition stats may come back: a collect of the rows would fail.
    with (
        mock.patch.object(DataFrame, "collect", side_effect=AssertionError("collected")),
        mock.patch.object(DataFrame, "toPandas", side_effect=AssertionError("collected")),
        mock.patch.object(DataFrame, "toLocalIterator", side_effect=AssertionError("collected")),
    ):
        ours.materialize(START, END)
    assert len(snapshot(module_redis + "7")) > 50


ROWS = 120_000
ENTITIES = 60_000


def _kill_objects(parquet: Path) -> list[Any]:
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    return [
        driver,
        FeatureView(
            name="stats",
            entities=[driver],
            schema=[
                Field(name="driver_id", dtype=Int64),
                Field(name="rate", dtype=Float64),
                Field(name="label", dtype=String),
            ],
            source=FileSource(path=str(parquet), timestamp_field="event_ts"),
            ttl=timedelta(0),
        ),
    ]


@pytest.mark.slow
def test_sigkill_mid_spark_materialize_then_rerun_converges(
    tmp_path: Path, module_redis: str, spark: Any
) -> None:
    rng = np.random.default_rng(4)
    parquet = tmp_path / "stats.parquet"
    pq.write_table(
        pa.table(
            {
                "driver_id": pa.array(np.arange(ROWS) % ENTITIES, pa.int64()),
                "rate": rng.random(ROWS),
                "label": pa.array(rng.integers(0, 10**6, ROWS).astype(str)),
                "event_ts": pa.array(
                    int(T0.timestamp() * 1e6) + rng.integers(0, 10**12, ROWS),
                    pa.timestamp("us", tz="UTC"),
                ),
            }
        ),
        parquet,
    )
    killed_url, clean_url = module_redis + "8", module_redis + "9"
    for url in (killed_url, clean_url):
        redis.Redis.from_url(url).flushdb()
    killed = spark_repo(
        tmp_path / "killed", killed_url, lambda: _kill_objects(parquet), write_chunk_rows=500
    )
    start, end = (T0 - timedelta(days=1)).isoformat(), (T0 + timedelta(days=30)).isoformat()
    feast_cli = Path(sys.executable).parent / "feast"
    proc = subprocess.Popen(
        [str(feast_cli), "-c", str(tmp_path / "killed"), "materialize", start, end],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = redis.Redis.from_url(killed_url)
    deadline = time.monotonic() + 300
    try:
        while client.dbsize() < 2_000:
            assert proc.poll() is None, "materialize finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        # The driver, its JVM and its Python workers: the whole process group, at once.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(1)
    partial = client.dbsize()
    assert 0 < partial < ENTITIES, "the kill did not land mid-run"
    assert not killed.get_feature_view("stats").materialization_intervals

    killed.materialize(T0 - timedelta(days=1), T0 + timedelta(days=30))
    clean = make_store(
        tmp_path / "clean",
        RepoSpec("p", clean_url, True, True, offline=DUCKDB),
        lambda: _kill_objects(parquet),
    )
    clean.materialize(T0 - timedelta(days=1), T0 + timedelta(days=30))
    result = snapshot(killed_url)
    assert len(result) == ENTITIES
    assert result == snapshot(clean_url)
    assert killed.get_feature_view("stats").materialization_intervals
