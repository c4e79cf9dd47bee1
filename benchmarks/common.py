"""Helpers shared by the benchmark scripts: run a child process and measure it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def median_round(rounds: Sequence[T], key: Callable[[T], float]) -> T:
    """The round with the median ``key`` (the lower middle one of an even count): a run's
    figures come from one real round, alternated with its comparison, not from averages."""
    return sorted(rounds, key=key)[(len(rounds) - 1) // 2]


# Appended to a child's Python code: prints the child's own peak RSS as the last line.
_RSS_TAIL = (
    "\nimport resource, json, sys\n"
    "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
    "print(json.dumps({'peak_rss_mb': rss}), file=sys.stderr)\n"
)


@dataclass(frozen=True, slots=True)
class Measured:
    wall_s: float
    peak_rss_mb: float


def run_python(code: str, *, env: dict[str, str] | None = None, cwd: str | None = None) -> Measured:
    """Run ``code`` in a fresh interpreter; return its wall time and peak RSS.

    Raises:
        RuntimeError: the child failed (its stderr is included).
    """
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code + _RSS_TAIL], capture_output=True, text=True, env=env, cwd=cwd
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    rss = json.loads(proc.stderr.strip().splitlines()[-1])["peak_rss_mb"]
    return Measured(wall_s=round(wall, 3), peak_rss_mb=round(rss, 1))


def emit(result: dict[str, Any]) -> None:
    """Print one benchmark result as a JSON line."""
    print(json.dumps(result, default=lambda o: asdict(o)), flush=True)


def backend_env(redis_url: str, registry_url: str) -> dict[str, str]:
    """This process's environment for a child `feast` / `featurestore` command, pointed at
    the given Redis and registry (and nothing inherited from ``FEATURESTORE_*``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTORE_")}
    env.update(
        PYTHONPATH=str(ROOT),
        FEATURESTORE_REDIS_URL=redis_url,
        FEATURESTORE_REGISTRY_URL=registry_url,
    )
    return env


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    """Poll ``url`` until it answers 200.

    Raises:
        RuntimeError: the server exited or did not answer in time (with its log tail).
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not ready: {log.read_text()[-2000:]}")
        time.sleep(0.3)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _calibration_ms() -> float:
    """The best of five runs of a fixed single-threaded Python loop: how fast one core of
    this machine is today, so figures from different machines (or days) can be compared."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i & 7
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def machine() -> dict[str, Any]:
    """The machine a benchmark runs on, and how busy it was when the run started: the CPU,
    the cores this process may use, memory, the load average (1, 5, 15 minutes) and a
    one-core calibration time. Call :func:`finish_machine` on the result at the end."""
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(memory_gb, 1),
        "calibration_loop_ms": _calibration_ms(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }


def finish_machine(info: dict[str, Any]) -> dict[str, Any]:
    """``info`` from :func:`machine` with the load average at the end of the run added."""
    info["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    return info
