"""Soak: a fixed request rate against several workers, auth on; errors, p99 and RSS over time.

    .venv/bin/python -m benchmarks.soak_bench [--rate 500] [--duration 60] [--workers 2]

Sets up a copy of the example repo (generated data, `feast apply`, `feast materialize`)
on a private redis-server and SQLite registry, starts `featurestore serve --auth
--workers N`, and sends a fixed-rate mix of lookups (80% one driver, 10% three views,
10% the feature service with its on-demand view) from keep-alive connections on
loopback. Latency is measured from each request's scheduled send time, so a stalled
server cannot hide behind a slowed-down client. Worker RSS is sampled every 5 s.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.common import ROOT, backend_env, wait_ready
from online_store.embedded import EmbeddedRedis, free_port
from service.auth import KeyStore, Scope, open_key_engine

BIN = Path(sys.executable).parent

BODIES: list[tuple[float, dict[str, Any]]] = [
    (0.8, {"features": [f"driver_hourly_stats:{f}" for f in
                        ("conv_rate", "acc_rate", "avg_daily_trips", "avg_rating",
                         "surge_multiplier", "is_active")],
           "entities": {"driver_id": [1001]}}),
    (0.1, {"features": ["driver_hourly_stats:conv_rate", "customer_profile:membership_tier",
                        "driver_customer_stats:trips_together"],
           "entities": {"driver_id": [1001], "customer_id": ["c_0000000"]}}),
    (0.1, {"feature_service": "ride_ranking_v1",
           "entities": {"driver_id": [1002], "customer_id": ["c_0000919"],
                        "distance_km": [4.2], "duration_min": [11.0]}}),
]  # fmt: skip


def _setup(work: Path, redis_url: str) -> tuple[Path, str]:
    repo = work / "repo"
    shutil.copytree(
        ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__")
    )
    env = backend_env(redis_url, f"sqlite:///{repo / 'data' / 'registry.db'}")
    subprocess.run([sys.executable, str(repo / "generate.py"), "--rows", "100000", "--out",
                    str(repo / "data")], check=True, capture_output=True)  # fmt: skip
    subprocess.run(
        [str(BIN / "feast"), "apply"], cwd=repo, env=env, check=True, capture_output=True
    )
    end = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    subprocess.run([str(BIN / "feast"), "materialize", "2000-01-01T00:00:00", end],
                   cwd=repo, env=env, check=True, capture_output=True)  # fmt: skip
    return repo, env["FEATURESTORE_REGISTRY_URL"]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _request_bytes(body: dict[str, Any], key: str) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        "POST /get-online-features HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def _load(
    port: int, key: str, *, rate: float, duration: float, connections: int
) -> dict[str, Any]:
    weights = [w for w, _ in BODIES]
    requests = [_request_bytes(b, key) for _, b in BODIES]
    # A fixed, repeatable mix: request i uses body mix[i % 100].
    mix = [i for i, w in enumerate(weights) for _ in range(round(w * 100))]
    total = int(rate * duration)
    tickets = iter(range(total))
    latencies: list[float] = []
    errors: dict[str, int] = {}
    start = time.perf_counter() + 0.5

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in tickets:
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                writer.write(requests[mix[i % len(mix)]])
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                status = status_line.split()[1].decode() if status_line else "closed"
                if status != "200":
                    errors[status] = errors.get(status, 0) + 1
            except (OSError, asyncio.IncompleteReadError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            latencies.append(time.perf_counter() - due)
        writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 2)

    return {
        "requests": len(latencies),
        "achieved_rps": round(len(latencies) / elapsed, 1),
        "errors": sum(errors.values()),
        "errors_by_kind": errors,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
    }


async def _sample_rss(
    pids: list[int], every: float, out: list[dict[str, float]], stop: asyncio.Event
) -> None:
    t0 = time.perf_counter()
    while not stop.is_set():
        out.append(
            {
                "t_s": round(time.perf_counter() - t0, 1),
                **{str(p): round(_rss_mb(p), 1) for p in pids},
            }
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def _run(port: int, key: str, pids: list[int], args: argparse.Namespace) -> dict[str, Any]:
    samples: list[dict[str, float]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(pids, 5.0, samples, stop))
    load = await _load(
        port, key, rate=args.rate, duration=args.duration, connections=args.connections
    )
    stop.set()
    await sampler
    samples.append(
        {"t_s": samples[-1]["t_s"] + 0.1, **{str(p): round(_rss_mb(p), 1) for p in pids}}
    )
    return {**load, "rss_samples_mb": samples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="soak-bench-"))
    redis_server = EmbeddedRedis(work / "redis", persistent=False)
    proc: subprocess.Popen[bytes] | None = None
    try:
        redis_url = redis_server.start()
        repo, registry_url = _setup(work, redis_url)
        engine: sa.Engine = open_key_engine(registry_url, 5)
        key = KeyStore(engine, project="rides").create(Scope.READ, name="soak")
        engine.dispose()
        port = free_port()
        log = (work / "serve.log").open("wb")
        proc = subprocess.Popen(
            [str(BIN / "featurestore"), "serve", "--auth", "--repo", str(repo),
             "--port", str(port), "--workers", str(args.workers)],
            env=backend_env(redis_url, registry_url), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_ready(f"http://127.0.0.1:{port}/ready", proc, work / "serve.log", timeout=90)
        # Warm every worker (and its plan cache) before the measured run.
        asyncio.run(_load(port, key, rate=200, duration=3, connections=8))
        # uvicorn's worker processes (the supervisor's children), not its resource tracker.
        workers = [
            p for p in _children(proc.pid)
            if "resource_tracker" not in Path(f"/proc/{p}/cmdline").read_text()
        ]  # fmt: skip
        result = asyncio.run(_run(port, key, workers, args))
        first, last = result["rss_samples_mb"][0], result["rss_samples_mb"][-1]
        growth = {p: round(last[p] - first[p], 1) for p in first if p != "t_s"}
        summary = {k: v for k, v in result.items() if k != "rss_samples_mb"}
        print(json.dumps({
            "benchmark": "soak", "workers": args.workers, "target_rps": args.rate,
            "duration_s": args.duration, **summary,
            "rss_start_mb": {p: v for p, v in first.items() if p != "t_s"},
            "rss_end_mb": {p: v for p, v in last.items() if p != "t_s"},
            "rss_growth_mb": growth,
            "rss_samples_mb": result["rss_samples_mb"],
        }, indent=2))  # fmt: skip
        return 0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        redis_server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
