"""Online serving: ``featurestore serve`` vs stock ``feast serve``, one run, same backends.

    .venv/bin/python -m benchmarks.serve_bench [--duration 8] [--connections 8 64] \
        [--repeat 3] [--workers 1] [--entities 10000] [--out benchmarks/results/serve.json]

Both servers read the same SQL registry and the same Redis (a private loopback
``redis-server``), loaded once by ``feast materialize`` with our engine (the Redis
layout is Feast's, so stock Feast reads it). Load comes from ``wrk`` on loopback
(one thread, a Lua script per case for the POST body), after a short warm-up, in
``--repeat`` rounds that alternate the two servers; each figure is the round with the
median req/s (the loopback timings of a small VM swing by a fifth between runs).
``feast serve`` runs with its access log off and ``--max-requests 0`` so gunicorn
never restarts its workers mid-run. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.common import ROOT, backend_env, finish_machine, machine, median_round, wait_ready
from benchmarks.serve_repo import customer_ids, driver_ids, write_data
from online_store.embedded import EmbeddedRedis, free_port

BIN = Path(sys.executable).parent
F10 = [f"f{i}" for i in range(10)]
VIEWS = ("bench_driver", "bench_customer", "bench_pair")


@dataclass(frozen=True)
class Result:
    server: str
    case: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int


def cases(entities: int) -> dict[str, dict[str, Any]]:
    """The request bodies."""
    drivers = driver_ids(entities)
    customers = customer_ids(entities)
    step = max(1, entities // 100)
    return {
        "1 entity x 10 features": {
            "entities": {"driver_id": [drivers[len(drivers) // 2]]},
            "features": [f"bench_driver:{f}" for f in F10],
        },
        "100 entities x 10 features": {
            "entities": {"driver_id": drivers[::step][:100]},
            "features": [f"bench_driver:{f}" for f in F10],
        },
        "1 entity x 3 views x 10 features": {
            "entities": {"driver_id": [drivers[7]], "customer_id": [customers[7]]},
            "features": [
                f"{v}:{f}" for v in ("bench_driver", "bench_customer", "bench_pair") for f in F10
            ],
            "full_feature_names": True,  # the three views share feature names
        },
        "feature service with on-demand view": {
            "entities": {
                "driver_id": [drivers[11]],
                "customer_id": [customers[11]],
                "distance_km": [4.2],
            },
            "feature_service": "bench_service",
            "full_feature_names": True,
        },
        # The same view tagged row-wise: our concurrent lookups share its calls.
        "feature service with row-wise on-demand view": {
            "entities": {
                "driver_id": [drivers[11]],
                "customer_id": [customers[11]],
                "distance_km": [4.2],
            },
            "feature_service": "bench_service_rows",
            "full_feature_names": True,
        },
    }


def _write_yaml(repo: Path, *, registry_url: str, redis_url: str, stock: bool) -> None:
    if stock:
        hostport, _, db = redis_url.split("://", 1)[1].partition("/")
        online: dict[str, Any] = {"type": "redis", "connection_string": f"{hostport},db={db or 0}"}
    else:
        online = {"type": "online_store.store.FastRedisOnlineStore"}
    config: dict[str, Any] = {
        "project": "bench",
        "provider": "local",
        "registry": {"registry_type": "sql", "path": registry_url, "cache_ttl_seconds": 60},
        "online_store": online,
        "offline_store": {
            "type": "file" if stock else "offline_store.store.DuckDBParquetOfflineStore"
        },
        "entity_key_serialization_version": 3,
    }
    if not stock:
        config["batch_engine"] = {"type": "online_store.engine.StreamingMaterializationEngine"}
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config))


def _lua(body: dict[str, Any], path: Path) -> Path:
    payload = json.dumps(body).replace("\\", "\\\\").replace("'", "\\'")
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = '{payload}'\n"
    )
    return path


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, script: Path, *, connections: int, duration: float) -> dict[str, float]:
    """One wrk run; returns rps, p50/p99 in ms, request and error counts."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
         "--timeout", "10s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    if "50" not in pct or "99" not in pct:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(pct["50"]),
        "p99_ms": _ms(pct["99"]),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds per measurement; the median is reported"
    )
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--workers", type=int, default=1, help="worker processes, both servers")
    parser.add_argument("--entities", type=int, default=10_000, help="entities per view")
    parser.add_argument("--only", default="", help="run only cases containing this text")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve.json")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk not found; install it (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2

    host = machine()
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    redis_server = EmbeddedRedis(work / "redis", persistent=False)
    try:
        redis_url = redis_server.start()
        ours_repo, stock_repo = work / "ours", work / "stock"
        for repo in (ours_repo, stock_repo):
            (repo / "data").mkdir(parents=True)
        registry_url = f"sqlite:///{ours_repo / 'data' / 'registry.db'}"
        shutil.copy(ROOT / "benchmarks" / "serve_repo.py", ours_repo / "definitions.py")
        _write_yaml(ours_repo, registry_url=registry_url, redis_url=redis_url, stock=False)
        _write_yaml(stock_repo, registry_url=registry_url, redis_url=redis_url, stock=True)
        when = write_data(ours_repo / "data", entities=args.entities)
        env = backend_env(redis_url, registry_url)
        feast = str(BIN / "feast")
        subprocess.run([feast, "apply"], cwd=ours_repo, env=env, check=True, capture_output=True)
        start = (when - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
        end = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
        subprocess.run([feast, "materialize", start, end], cwd=ours_repo, env=env, check=True,
                       capture_output=True)  # fmt: skip

        ours_port, feast_port = free_port(), free_port()
        servers = {
            "ours": (
                [str(BIN / "featurestore"), "serve", "--repo", str(ours_repo),
                 "--port", str(ours_port), "--workers", str(args.workers)],
                ours_port,
            ),
            "feast serve": (
                [feast, "-c", str(stock_repo), "serve", "-h", "127.0.0.1", "-p", str(feast_port),
                 "--no-access-log", "--workers", str(args.workers), "--max-requests", "0",
                 "--max-requests-jitter", "0", "-r", "60"],
                feast_port,
            ),
        }  # fmt: skip
        for name, (cmd, port) in servers.items():
            log = work / f"{name.replace(' ', '_')}.log"
            proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
            procs.append(proc)
            wait_ready(f"http://127.0.0.1:{port}/health", proc, log)

        bodies = {k: v for k, v in cases(args.entities).items() if args.only in k}
        results: list[Result] = []
        for index, (case, body) in enumerate(bodies.items()):
            script = _lua(body, work / f"case{index}.lua")
            _check_same_values(case, body, {n: port for n, (_, port) in servers.items()})
            # Rounds alternate the servers, so a slow spell of the machine hits both.
            for _ in range(args.repeat):
                for name, (_, port) in servers.items():
                    url = f"http://127.0.0.1:{port}/get-online-features"
                    for connections in args.connections:
                        run_wrk(url, script, connections=connections, duration=args.warmup)
                        stats = run_wrk(url, script, connections=connections,
                                        duration=args.duration)  # fmt: skip
                        results.append(Result(name, case, connections, **stats))  # type: ignore[arg-type]
                        print(f"{name:12} {case:38} c={connections:<3} {stats['rps']:9.0f} req/s "
                              f"p50 {stats['p50_ms']:7.2f} ms  p99 {stats['p99_ms']:7.2f} ms",
                              file=sys.stderr, flush=True)  # fmt: skip
        report = _report(results, args)
        report["machine"] = finish_machine(host)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
        print(_table(report), file=sys.stderr)
        return 0
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        redis_server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _check_same_values(case: str, body: dict[str, Any], ports: dict[str, int]) -> None:
    """Each server answers ``body`` 200, and eight lookups sent at once (each with its own
    request data, where the body has some), with the same values per feature as the other
    server: ours may share a row-wise view's call between them."""
    entities = body["entities"]
    bodies = [
        body | {"entities": entities | {"distance_km": [entities["distance_km"][0] + i]}}
        if "distance_km" in entities
        else body
        for i in range(8)
    ]

    async def at_once(port: int) -> list[httpx.Response]:
        url = f"http://127.0.0.1:{port}/get-online-features"
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(client.post(url, json=b) for b in bodies))

    answers: dict[str, list[dict[str, Any]]] = {}
    for name, port in ports.items():
        for response in asyncio.run(at_once(port)):
            if response.status_code != 200:
                raise RuntimeError(f"{name} {case}: {response.status_code} {response.text[:500]}")
            data = response.json()
            names = data["metadata"]["feature_names"]
            values = {n: r["values"] for n, r in zip(names, data["results"], strict=True)}
            answers.setdefault(name, []).append(values)
    first, *others = answers.values()
    if any(other != first for other in others):
        raise RuntimeError(f"{case}: the servers' values differ: {answers}")


def _report(results: list[Result], args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    rounds: dict[tuple[str, str, int], list[Result]] = {}
    for r in results:
        rounds.setdefault((r.server, r.case, r.connections), []).append(r)
    for (server, case, connections), ours in rounds.items():
        if server != "ours":
            continue
        theirs = rounds[("feast serve", case, connections)]
        by_rps = attrgetter("rps")
        r, base = median_round(ours, key=by_rps), median_round(theirs, key=by_rps)
        rows.append({
            "case": case,
            "connections": connections,
            "ours": asdict(r),
            "feast_serve": asdict(base),
            "ours_rps_rounds": [x.rps for x in ours],
            "feast_serve_rps_rounds": [x.rps for x in theirs],
            "rps_ratio": round(r.rps / base.rps, 1) if base.rps else None,
        })  # fmt: skip
    return {
        "benchmark": "serve",
        "when": datetime.now(UTC).isoformat(),
        "workers": args.workers,
        "duration_s": args.duration,
        "rounds": args.repeat,
        "entities_per_view": args.entities,
        "load_generator": "wrk -t1 (loopback)",
        "rows": rows,
    }


def _table(report: dict[str, Any]) -> str:
    lines = [
        "| case | conns | feast serve req/s | p50 ms | p99 ms | ours req/s | p50 ms | p99 ms | x |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        f, o = row["feast_serve"], row["ours"]
        lines.append(
            f"| {row['case']} | {row['connections']} | {f['rps']:.0f} | {f['p50_ms']:.2f} | "
            f"{f['p99_ms']:.2f} | {o['rps']:.0f} | {o['p50_ms']:.2f} | {o['p99_ms']:.2f} | "
            f"{row['rps_ratio']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
