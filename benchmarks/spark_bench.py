"""Spark benchmark: our Spark offline store against Feast's own (contrib) Spark offline store on
the same data in ``local[2]``, and our Spark materialization at two sizes. Prints JSON.

Training set: N feature rows over E drivers (TTL 1 day, created-time ties, nulls), M entity rows
(duplicates, some before any event). Each store builds the point-in-time join as a Spark
DataFrame and writes it to Parquet from the executors (nothing collected by either); we report
wall time (the first run in a fresh process, cold, and the best of the later runs in the same
session, warm), the driver's peak RSS (the Python process and its JVM, sampled from /proc), the
rows kept and how many feature values differ from our DuckDB store's exact answer.

Materialize: our Spark engine (Spark offline store, executors write Redis) against stock Feast
(its Spark offline store, local engine, Redis store), into a private redis-server, at 1M and at
10M rows; our driver's peak RSS should not grow with the row count, Feast's collects the rows.

Every run is a child process, so each peak RSS is its own.

    .venv/bin/python -m benchmarks.spark_bench                      # defaults below
    .venv/bin/python -m benchmarks.spark_bench --feature-rows 2000000 --entity-rows 200000
    .venv/bin/python -m benchmarks.spark_bench --materialize 1000000 10000000
    .venv/bin/python -m benchmarks.spark_bench --views 3 --materialize  # 3 views, one key
    .venv/bin/python -m benchmarks.spark_bench --rounds 1 --materialize  # cold only, no materialize
    .venv/bin/python -m benchmarks.spark_bench --join-strategy window --materialize  # one plan
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from benchmarks.common import finish_machine, machine

T0 = datetime(2024, 1, 1, tzinfo=UTC)
CONF = {
    "spark.master": "local[2]",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "2g",
}


def generate(path: Path, rows: int, entities: int, seed: int) -> None:
    """Driver stats: ``rows`` rows, 1M at a time, with nulls and event-time ties."""
    rng = np.random.default_rng(seed)
    writer: pq.ParquetWriter | None = None
    done = 0
    while done < rows:
        n = min(1_000_000, rows - done)
        # Whole minutes over 30 days: many (driver, event time) ties, broken by created.
        event = T0.timestamp() * 1e6 + rng.integers(0, 30 * 1440, n) * 60_000_000
        rate = rng.random(n)
        table = pa.table(
            {
                "driver_id": pa.array(rng.integers(0, entities, n), pa.int64()),
                "event_timestamp": pa.array(event.astype(np.int64), pa.timestamp("us", tz="UTC")),
                "created": pa.array(
                    (event + rng.integers(0, 3, n) * 1_000_000).astype(np.int64),
                    pa.timestamp("us", tz="UTC"),
                ),
                "conv_rate": pa.array(rate, mask=rng.random(n) < 0.05),
                "trips": pa.array(rng.integers(0, 100, n), pa.int64()),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=250_000)
        done += n
    assert writer is not None
    writer.close()


def entity_rows(path: Path, rows: int, entities: int, seed: int) -> None:
    rng = np.random.default_rng(seed + 1)
    ids = rng.integers(0, entities + entities // 10, rows)  # some drivers have no rows
    ids[: rows // 20] = ids[rows // 20 : 2 * (rows // 20)]  # duplicates
    ts = T0.timestamp() * 1e6 + rng.integers(-86_400, 31 * 86_400, rows) * 1_000_000
    pq.write_table(
        pa.table(
            {
                "driver_id": pa.array(ids, pa.int64()),
                "event_timestamp": pa.array(ts.astype(np.int64), pa.timestamp("us", tz="UTC")),
                "label": pa.array(rng.integers(0, 2, rows), pa.int64()),
            }
        ),
        path,
    )


DEFINITIONS = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.types import Float64, Int64

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
source = {source}(name="stats_src", path="{path}", {format}
                  timestamp_field="event_timestamp", created_timestamp_column="created")
stats = FeatureView(name="stats", entities=[driver], ttl=timedelta(days=1),
                    schema=[Field(name="conv_rate", dtype=Float64),
                            Field(name="trips", dtype=Int64)],
                    source=source)
# More views on the same key (a feature service's usual shape), TTLs of 2, 3, ... days.
views = [stats] + [
    FeatureView(name=f"stats{{i}}", entities=[driver], ttl=timedelta(days=i + 1),
                schema=[Field(name="conv_rate", dtype=Float64), Field(name="trips", dtype=Int64)],
                source=source)
    for i in range(1, {views})
]
"""


def feature_refs(views: int) -> list[str]:
    names = ["stats"] + [f"stats{i}" for i in range(1, views)]
    return [f"{name}:{feature}" for name in names for feature in ("conv_rate", "trips")]


def write_repo(
    root: Path, data: Path, offline: dict[str, Any], redis_url: str | None, views: int = 1
) -> None:
    root.mkdir(parents=True, exist_ok=True)
    # Feast's Spark store reads SparkSource only, the DuckDB store FileSource only; ours both.
    spark_source = offline["type"] == "spark"
    (root / "definitions.py").write_text(
        DEFINITIONS.format(
            path=data,
            source="SparkSource" if spark_source else "FileSource",
            format='file_format="parquet",' if spark_source else "",
            views=views,
        )
    )
    online: dict[str, Any] = {"type": "sqlite", "path": str(root / "online.db")}
    engine: Any = "local"
    if redis_url is not None and spark_source:  # stock Feast: its Redis store, local engine
        hostport, db = redis_url.split("://", 1)[1].split("/")
        online = {"type": "redis", "connection_string": f"{hostport},db={db}"}
    elif redis_url is not None:
        online = {"type": "online_store.store.FastRedisOnlineStore", "connection_string": redis_url}
        engine = {"type": "online_store.spark.SparkMaterializationEngine"}
    config = {
        "project": "bench",
        "provider": "local",
        "registry": {"registry_type": "sql", "path": f"sqlite:///{root}/registry.db"},
        "online_store": online,
        "offline_store": offline,
        "batch_engine": engine,
        "entity_key_serialization_version": 3,
    }
    (root / "feature_store.yaml").write_text(yaml.safe_dump(config))


class PeakRss:
    """Peak RSS of this process and of its child JVM, sampled every 50 ms."""

    def __init__(self) -> None:
        self.python = 0
        self.jvm = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _children(self) -> list[int]:
        me = os.getpid()
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == me:
                        out.append(int(entry.name))
                except (OSError, ValueError, IndexError):
                    continue
        return out

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.python = max(self.python, self._rss(os.getpid()))
            self.jvm = max(self.jvm, sum(self._rss(pid) for pid in self._children()))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One measured run, in this (child) process."""
    with PeakRss() as peak:
        from feast import FeatureStore
        from pyspark.sql import SparkSession

        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = SparkSession.builder
        for key, value in CONF.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        if args.kind != "feast":
            from offline_store.spark_session import spark_session

            spark = spark_session()
        store = FeatureStore(repo_path=args.repo)
        store.apply([])  # registry ready (objects applied by the parent)
        result: dict[str, Any] = {}
        if args.kind == "materialize":
            started = time.perf_counter()
            store.materialize(T0 - timedelta(days=1), T0 + timedelta(days=40))
            result["drivers"] = int(args.rows)
            result["seconds"] = round(time.perf_counter() - started, 2)
        else:
            import pandas as pd

            # The first run pays the JVM's warm-up (a fresh spark-submit); later runs in the
            # same session are what a notebook or a long-lived Spark application sees.
            times = []
            for _ in range(int(args.rounds)):
                started = time.perf_counter()
                entities = pd.read_parquet(args.entities)
                job = store.get_historical_features(
                    entity_df=entities,
                    features=feature_refs(int(args.views)),
                    full_feature_names=int(args.views) > 1,
                )
                job.to_spark_df().write.mode("overwrite").parquet(args.out)
                times.append(time.perf_counter() - started)
            result["seconds"] = round(times[0], 2)
            if len(times) > 1:
                result["warm_seconds"] = round(min(times[1:]), 2)
        spark.stop()
    result["driver_python_peak_rss_mb"] = round(peak.python / 2**20)
    result["driver_jvm_peak_rss_mb"] = round(peak.jvm / 2**20)
    return result


def _cause(text: str) -> str:
    """The line of a failed child's error that says what went wrong."""
    lines = text.splitlines()
    causes = [ln for ln in lines if "Caused by" in ln or "Error:" in ln or "Exception:" in ln]
    return (causes or lines or ["failed"])[-1].strip()[:500]


def run_child(kind: str, repo: Path, **extra: Any) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.spark_bench", "--child", kind, "--repo", str(repo)]
    for key, value in extra.items():
        cmd += [f"--{key}", str(value)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        # The JVM's stack frames bury the Python error: keep the lines that say what failed.
        said = [ln for ln in out.stderr.splitlines() if not ln.lstrip().startswith("at ")]
        raise RuntimeError("\n".join(said)[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def training(
    tmp: Path,
    feature_rows: int,
    entity_count: int,
    entity_rows_n: int,
    rounds: int,
    views: int,
    join_strategy: str = "auto",
) -> dict[str, Any]:
    from feast import FeatureStore

    data, ents = tmp / "stats.parquet", tmp / "entities.parquet"
    generate(data, feature_rows, entity_count, seed=1)
    entity_rows(ents, entity_rows_n, entity_count, seed=1)
    repos = {
        "ours": {"type": "offline_store.spark.SparkOfflineStore", "join_strategy": join_strategy},
        "feast": {"type": "spark"},
        "duckdb": {"type": "offline_store.store.DuckDBParquetOfflineStore"},
    }
    for name, offline in repos.items():
        write_repo(tmp / name, data, offline, None, views)
        store = FeatureStore(repo_path=str(tmp / name))
        store.apply(_objects(tmp / name))
    # The exact answer (DuckDB, checked against the naive reference in the tests).
    import pandas as pd

    exact = (
        FeatureStore(repo_path=str(tmp / "duckdb"))
        .get_historical_features(
            entity_df=pd.read_parquet(ents),
            features=feature_refs(views),
            full_feature_names=views > 1,
        )
        .to_arrow()
    )
    report: dict[str, Any] = {
        "join_strategy": join_strategy,
        "feature_rows": feature_rows,
        "entity_rows": entity_rows_n,
        "drivers": entity_count,
        "views": views,
    }
    for name in ("ours", "feast"):
        out = tmp / f"{name}_out"
        stats = run_child(name, tmp / name, entities=ents, out=out, rounds=rounds, views=views)
        got = pq.read_table(out)
        stats["rows_kept"] = got.num_rows
        stats.update(_diff(exact, got))
        report[name] = stats
    report["speedup_vs_feast"] = round(report["feast"]["seconds"] / report["ours"]["seconds"], 2)
    if rounds > 1:
        warm = report["feast"]["warm_seconds"] / report["ours"]["warm_seconds"]
        report["warm_speedup_vs_feast"] = round(warm, 2)
    return report


def _objects(repo: Path) -> list[Any]:
    namespace: dict[str, Any] = {}
    exec((repo / "definitions.py").read_text(), namespace)
    return [namespace["driver"], namespace["source"], *namespace["views"]]


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    ts = row["event_timestamp"]
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return (row["driver_id"], ts, row["label"])


def _diff(exact: pa.Table, got: pa.Table) -> dict[str, int]:
    """Exact rows missing (or with other values) in ``got``, and rows ``got`` has in excess."""
    from collections import Counter

    features = [c for c in exact.column_names if c not in ("driver_id", "event_timestamp", "label")]
    want = Counter((*_key(r), *[r[f] for f in features]) for r in exact.to_pylist())
    have = Counter((*_key(r), *[r[f] for f in features]) for r in got.to_pylist())
    return {
        "wrong_or_missing_rows": sum((want - have).values()),
        "extra_rows": sum((have - want).values()),
    }


def materialize(tmp: Path, sizes: list[int], stock_max: int) -> dict[str, Any]:
    import redis
    from feast import FeatureStore

    from online_store.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp / "redis", persistent=False)
    server.start()
    try:
        report: dict[str, Any] = {}
        client = redis.Redis.from_url(server.url)
        for rows in sizes:
            data = tmp / f"mat_{rows}.parquet"
            generate(data, rows, rows // 10, seed=2)
            sized: dict[str, Any] = {"rows": rows, "drivers": rows // 10}
            for name, offline in (
                ("ours", {"type": "offline_store.spark.SparkOfflineStore"}),
                ("feast", {"type": "spark"}),
            ):
                if name == "feast" and rows > stock_max:
                    continue
                client.flushall()
                repo = tmp / f"mat_{name}_{rows}"
                write_repo(repo, data, offline, server.url)
                FeatureStore(repo_path=str(repo)).apply(_objects(repo))
                try:
                    stats = run_child("materialize", repo, rows=rows // 10)
                except RuntimeError as exc:
                    if name == "ours":
                        raise
                    # Feast's local engine collects the window into the driver; it can
                    # fail there (a lost task result, Java heap): a result, not a crash.
                    sized[name] = {"error": _cause(str(exc))}
                    continue
                stats["redis_keys"] = client.dbsize()
                sized[name] = stats
            if "seconds" in sized.get("feast", {}):
                speedup = sized["feast"]["seconds"] / sized["ours"]["seconds"]
                sized["speedup_vs_feast"] = round(speedup, 2)
            report[f"{rows:,}"] = sized
        return report
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--feature-rows", type=int, default=1_000_000)
    parser.add_argument("--drivers", type=int, default=50_000)
    parser.add_argument("--entity-rows", type=int, default=100_000)
    parser.add_argument("--materialize", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--views", type=int, default=1, help="feature views on the driver key")
    parser.add_argument(
        "--join-strategy",
        choices=["auto", "window", "broadcast"],
        default="auto",
        help="our Spark store's join plan (offline_store.join_strategy)",
    )
    parser.add_argument(
        "--stock-max", type=int, default=10_000_000, help="largest materialize run for Feast"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="training sets per process (first is cold)"
    )
    parser.add_argument("--child")
    parser.add_argument("--repo")
    parser.add_argument("--entities")
    parser.add_argument("--out")
    parser.add_argument("--rows")
    args = parser.parse_args()
    if args.child:
        args.kind = args.child
        print(json.dumps(child(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        report: dict[str, Any] = {"spark": "local[2]", "machine": machine()}
        if not args.skip_training:
            report["training_set"] = training(
                Path(tmp),
                args.feature_rows,
                args.drivers,
                args.entity_rows,
                args.rounds,
                args.views,
                args.join_strategy,
            )
        if args.materialize:
            report["materialize"] = materialize(Path(tmp), args.materialize, args.stock_max)
        finish_machine(report["machine"])
        print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
