"""Helpers shared by the benchmark scripts: run a child process and measure it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

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
