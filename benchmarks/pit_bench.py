"""Point-in-time join benchmark: stock Feast file (dask) store vs our DuckDB store, same data.

Generates its own data (never committed), then runs each store in its own subprocess (so peak
RSS is per run), and prints one JSON document: wall seconds, peak RSS MB, speed-up, and an
exactness check (for every row stock Feast returns our values are equal; every row it drops is
present in ours with the view's features null).

    .venv/bin/python -m benchmarks.pit_bench --case small    # 100k entity rows x 1M, 1 view
    .venv/bin/python -m benchmarks.pit_bench --case medium   # 1M x 10M, 3 views
    .venv/bin/python -m benchmarks.pit_bench --case large --skip-stock --memory-limit 4GB
                                                            # 10M x 100M straight to Parquet
    .venv/bin/python -m benchmarks.pit_bench --case small --skip-stock --rounds 5
                                                            # ours and the floor alternating

Feature rows have unique (key, event time), so stock Feast's unordered tie-breaking cannot make
a difference and exactness is well defined.

The report also times the floor: one naive DuckDB ``ASOF LEFT JOIN`` per view over the same files
(same memory limit and threads, no TTL, no input order, no Feast types), into a pandas frame or
Parquet like ours, and gives ``ours_over_floor`` and input rows (entity + feature) per second.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.common import finish_machine, machine, median_round
from benchmarks.pit_checks import exactness_vs_stock, spot_check

BASE = datetime(2024, 1, 1, tzinfo=UTC)
SPAN_S = 30 * 24 * 3600
CHUNK = 1_000_000


@dataclass(frozen=True)
class Case:
    entity_rows: int
    views: dict[str, int]  # view -> feature rows
    features: int
    to_parquet: bool


CASES = {
    "tiny": Case(10_000, {"driver": 100_000}, 10, False),
    "small": Case(100_000, {"driver": 1_000_000}, 10, False),
    "medium": Case(
        1_000_000, {"driver": 4_000_000, "customer": 3_000_000, "pair": 3_000_000}, 10, False
    ),
    "large": Case(10_000_000, {"driver": 100_000_000}, 10, True),
}
TTL = {"driver": timedelta(days=2), "customer": timedelta(0), "pair": timedelta(days=7)}
KEYS = {"driver": ["driver_id"], "customer": ["customer_id"], "pair": ["driver_id", "customer_id"]}


def _keys(view: str, n_keys: int, key_index: np.ndarray) -> dict[str, pa.Array]:
    drivers = n_keys
    out: dict[str, pa.Array] = {}
    if "driver_id" in KEYS[view]:
        out["driver_id"] = pa.array(key_index % drivers, pa.int64())
    if "customer_id" in KEYS[view]:
        ids = pa.array((key_index * 7919) % (n_keys * 2), pa.int64()).cast(pa.string())
        out["customer_id"] = pc.binary_join_element_wise("c", ids, "")
    return out


def _generate_view(path: Path, view: str, rows: int, n_features: int, seed: int) -> int:
    """Rows round-robin over keys; each key's rows are at distinct, increasing times."""
    rng = np.random.default_rng(seed)
    n_keys = max(rows // 100, 1)
    per_key = -(-rows // n_keys)
    step = SPAN_S // per_key
    path.parent.mkdir(parents=True, exist_ok=True)
    writer: pq.ParquetWriter | None = None
    for start in range(0, rows, CHUNK):
        r = np.arange(start, min(rows, start + CHUNK), dtype=np.int64)
        key = r % n_keys
        slot = r // n_keys
        offset = (key * 7) % max(step - 1, 1)
        ts_us = (int(BASE.timestamp()) + slot * step + offset) * 1_000_000
        cols = _keys(view, n_keys, key)
        cols["event_timestamp"] = pa.array(ts_us, pa.timestamp("us", tz="UTC"))
        cols["created"] = pa.array(ts_us + 1_000_000, pa.timestamp("us", tz="UTC"))
        for f in range(n_features):
            values = rng.random(len(r))
            mask = rng.random(len(r)) < 0.01
            cols[f"{view}_f{f}"] = pa.array(values, pa.float64(), mask=mask)
        table = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=256_000)
    assert writer is not None
    writer.close()
    return n_keys


def _generate_entities(path: Path, case: Case, n_keys: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    writer: pq.ParquetWriter | None = None
    for start in range(0, case.entity_rows, CHUNK):
        n = min(CHUNK, case.entity_rows - start)
        # ~5% of entity keys exist in no view; times span the data plus a margin either side.
        key = rng.integers(0, int(n_keys * 1.05), n)
        cols = _keys("pair", n_keys, key)
        ts_s = int(BASE.timestamp()) + rng.integers(-86_400, SPAN_S + 5 * 86_400, n)
        cols["event_timestamp"] = pa.array(ts_s * 1_000_000, pa.timestamp("us", tz="UTC"))
        cols["row_id"] = pa.array(np.arange(start, start + n), pa.int64())
        cols["label"] = pa.array(rng.random(n) < 0.3, pa.bool_())
        table = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()


def _definitions(case: Case) -> str:
    lines = [
        "from datetime import timedelta",
        "from feast import Entity, FeatureView, Field, FileSource, ValueType",
        "from feast.types import Float64",
        "driver = Entity(name='driver', join_keys=['driver_id'], value_type=ValueType.INT64)",
        "customer = Entity(name='customer', join_keys=['customer_id'], "
        "value_type=ValueType.STRING)",
    ]
    for view in case.views:
        entities = ", ".join(
            {"driver_id": "driver", "customer_id": "customer"}[k] for k in KEYS[view]
        )
        fields = ", ".join(
            f"Field(name='{view}_f{i}', dtype=Float64)" for i in range(case.features)
        )
        lines += [
            f"{view}_src = FileSource(name='{view}_src', path='../data/{view}.parquet', "
            "timestamp_field='event_timestamp', created_timestamp_column='created')",
            f"{view}_fv = FeatureView(name='{view}_fv', entities=[{entities}], "
            f"ttl=timedelta(seconds={int(TTL[view].total_seconds())}), schema=[{fields}], "
            f"source={view}_src)",
        ]
    return "\n".join(lines) + "\n"


def _make_repo(root: Path, case: Case, offline: str, memory_limit: str, threads: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    extra = (
        f"  memory_limit: {memory_limit}\n  threads: {threads}\n  temp_directory: {root}/spill\n"
    )
    (root / "feature_store.yaml").write_text(
        "project: bench\nprovider: local\n"
        f"registry:\n  registry_type: sql\n  path: sqlite:///{root}/registry.db\n"
        f"online_store:\n  type: sqlite\n  path: {root}/online.db\n"
        f"offline_store:\n  type: {offline}\n"
        + (extra if offline != "file" else "")
        + "entity_key_serialization_version: 3\n"
    )
    (root / "defs.py").write_text(_definitions(case))
    subprocess.run(
        [str(Path(sys.executable).parent / "feast"), "apply"],
        cwd=root,
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )


def _floor(args: argparse.Namespace) -> None:
    """One naive ASOF join per view over the same files: the cost of the join alone."""
    import duckdb
    import pandas as pd

    views = json.loads(args.views)
    con = duckdb.connect(config={"memory_limit": args.memory_limit, "threads": args.threads})
    con.execute("SET TimeZone='UTC'")
    data = Path(args.entities).parent
    entity = "read_parquet(?)"
    params: list[Any] = [args.entities]
    if not args.to_parquet:
        entity_df = pd.read_parquet(args.entities)
        entity = "entity_df"
    t0 = time.perf_counter()
    if not args.to_parquet:
        con.register("entity_df", entity_df)
        params = []
    sql = f"SELECT * FROM {entity} e"
    for i, view in enumerate(views):
        keys = " AND ".join(f"e.{k} = f{i}.{k}" for k in KEYS[view])
        features = ", ".join(f"f{i}.{view}_f{j}" for j in range(args.features))
        sql = (
            f"SELECT e.*, {features} FROM ({sql}) e ASOF LEFT JOIN read_parquet(?) f{i} "
            f"ON {keys} AND e.event_timestamp >= f{i}.event_timestamp"
        )
        params.append(str(data / f"{view}.parquet"))
    if args.to_parquet:
        con.execute(f"COPY ({sql}) TO '{args.out}' (FORMAT parquet)", params)
        rows = pq.ParquetFile(args.out).metadata.num_rows
    else:
        rows = len(con.execute(sql, params).df())
    wall = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": round(wall, 2), "peak_rss_mb": round(rss_mb), "rows": rows}))


def _child(args: argparse.Namespace) -> None:
    """Run one retrieval in this process and print wall time and peak RSS."""
    import pandas as pd
    from feast import FeatureStore

    fs = FeatureStore(repo_path=args.repo)
    refs = [f"{fv.name}:{f.name}" for fv in fs.list_feature_views() for f in fv.features]
    if args.to_parquet:
        t0 = time.perf_counter()
        job = fs.get_historical_features(entity_df=args.entities, features=refs)
        job.to_parquet(args.out)  # type: ignore[attr-defined]
        wall = time.perf_counter() - t0
        rows = pq.ParquetFile(args.out).metadata.num_rows
    else:
        entity_df = pd.read_parquet(args.entities)
        t0 = time.perf_counter()
        df = fs.get_historical_features(entity_df=entity_df, features=refs).to_df()
        wall = time.perf_counter() - t0
        rows = len(df)
        # Written only so the parent can compare the two stores; not timed.
        df.to_parquet(args.out)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": round(wall, 2), "peak_rss_mb": round(rss_mb), "rows": rows}))


def _run(
    repo: Path,
    entities: Path,
    out: Path,
    to_parquet: bool,
    timeout: float,
    memory_cap_gb: float | None = None,
    floor: list[str] | None = None,
    threads: int = 2,
    memory_limit: str = "4GB",
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.pit_bench", "--child", "--repo", str(repo)]
    cmd += ["--entities", str(entities), "--out", str(out)]
    if floor is not None:
        cmd += ["--floor", json.dumps(floor), "--threads", str(threads)]
        cmd += ["--memory-limit", memory_limit]
    if to_parquet:
        cmd.append("--to-parquet")
    started = time.perf_counter()

    def cap() -> None:
        # The box is shared: a run that would exhaust RAM fails with MemoryError instead.
        if memory_cap_gb:
            limit = int(memory_cap_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=Path(__file__).parents[1],
            preexec_fn=cap,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = round(time.perf_counter() - started, 2)
    return result


def _ratio(ours: dict[str, Any], floor: dict[str, Any]) -> float | None:
    if "wall_s" not in ours or "wall_s" not in floor:
        return None
    return round(ours["wall_s"] / max(floor["wall_s"], 1e-9), 2)


def _median_round(
    rounds: list[tuple[dict[str, Any], dict[str, Any]]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The round whose ours-over-floor ratio is the median (the first failed one, if any)."""
    failed = [r for r in rounds if _ratio(*r) is None]
    if failed:
        return failed[0]
    return median_round(rounds, key=lambda r: _ratio(*r) or 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), default="small")
    parser.add_argument("--workdir", default="/tmp/pit_bench")
    parser.add_argument("--memory-limit", default="4GB")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument("--stock-timeout", type=float, default=1800)
    parser.add_argument(
        "--stock-memory-cap-gb",
        type=float,
        default=12,
        help="address-space cap for the stock Feast run (0 = none)",
    )
    parser.add_argument("--keep", action="store_true", help="keep generated data")
    parser.add_argument(
        "--rounds", type=int, default=1, help="runs of ours and the floor, alternating"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repo", help=argparse.SUPPRESS)
    parser.add_argument("--entities", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--to-parquet", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor", help=argparse.SUPPRESS)
    parser.add_argument("--features", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child and args.floor:
        args.views = args.floor
        _floor(args)
        return
    if args.child:
        _child(args)
        return

    case = CASES[args.case]
    host = machine()
    work = Path(args.workdir) / args.case
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    n_keys = 1
    for i, (view, rows) in enumerate(case.views.items()):
        n_keys = max(
            n_keys,
            _generate_view(work / "data" / f"{view}.parquet", view, rows, case.features, seed=i),
        )
    entities = work / "data" / "entities.parquet"
    _generate_entities(entities, case, n_keys, seed=99)
    generate_s = time.perf_counter() - t0

    ours_repo, stock_repo = work / "ours", work / "stock"
    _make_repo(
        ours_repo,
        case,
        "offline_store.store.DuckDBParquetOfflineStore",
        args.memory_limit,
        args.threads,
    )
    report: dict[str, Any] = {
        "case": args.case,
        "entity_rows": case.entity_rows,
        "feature_rows": case.views,
        "features_per_view": case.features,
        "duckdb_memory_limit": args.memory_limit,
        "duckdb_threads": args.threads,
        "generate_s": round(generate_s, 1),
        "machine": host,
    }
    # Rounds alternate ours and the floor, so a slow spell of the machine hits both; the
    # figures are the median round's.
    rounds: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for _ in range(args.rounds):
        ours = _run(ours_repo, entities, work / "ours.parquet", case.to_parquet, 7200)
        floor = _run(
            ours_repo,
            entities,
            work / "floor.parquet",
            case.to_parquet,
            7200,
            floor=list(case.views),
            threads=args.threads,
            memory_limit=args.memory_limit,
        )
        rounds.append((ours, floor))
    ours, floor = _median_round(rounds)
    input_rows = case.entity_rows + sum(case.views.values())
    if "wall_s" in ours:
        ours["rows_per_s"] = round(case.entity_rows / max(ours["wall_s"], 1e-9))
        ours["input_rows_per_s"] = round(input_rows / max(ours["wall_s"], 1e-9))
    report["ours"] = ours
    report["floor_naive_asof"] = floor
    if "wall_s" in floor and "wall_s" in ours:
        report["ours_over_floor"] = round(ours["wall_s"] / max(floor["wall_s"], 1e-9), 2)
    if args.rounds > 1:
        report["rounds"] = [
            {
                "ours_wall_s": o.get("wall_s"),
                "floor_wall_s": f.get("wall_s"),
                "ours_over_floor": _ratio(o, f),
            }
            for o, f in rounds
        ]
    if not args.skip_stock:
        _make_repo(stock_repo, case, "file", args.memory_limit, args.threads)
        stock = _run(
            stock_repo,
            entities,
            work / "stock.parquet",
            False,
            args.stock_timeout,
            args.stock_memory_cap_gb,
        )
        report["stock_feast"] = stock
        if "wall_s" in stock and "wall_s" in ours:
            report["speedup"] = round(stock["wall_s"] / max(ours["wall_s"], 1e-9), 1)
            report["rss_ratio_stock_over_ours"] = round(
                stock["peak_rss_mb"] / max(ours["peak_rss_mb"], 1), 2
            )
            report["exactness"] = exactness_vs_stock(
                [(v, KEYS[v]) for v in case.views],
                case.features,
                work / "ours.parquet",
                work / "stock.parquet",
                case.entity_rows,
            )
    if "wall_s" in ours:
        report["spot_check_vs_plain_sql"] = spot_check(
            [(v, KEYS[v], TTL[v], work / "data" / f"{v}.parquet") for v in case.views],
            case.features,
            entities,
            work / "ours.parquet",
        )
    finish_machine(host)
    print(json.dumps(report, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
