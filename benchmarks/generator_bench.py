"""Peak memory and speed of the example data generator.

    .venv/bin/python -m benchmarks.generator_bench --rows 1000000 10000000

Each size runs in a fresh interpreter writing to a temporary directory; the
generator streams, so peak RSS should stay flat as the row count grows.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import emit, run_python

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    args = parser.parse_args()
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as out:
            code = (
                "import sys; from pathlib import Path; from datetime import datetime, UTC\n"
                f"sys.path.insert(0, {str(ROOT / 'feature_repo')!r})\n"
                "import generate\n"
                f"counts = generate.generate(Path({out!r}), rows={rows}, seed=1, "
                "end=datetime(2026, 11, 1, tzinfo=UTC))\n"
            )
            measured = run_python(code)
            size_mb = sum(p.stat().st_size for p in Path(out).glob("*.parquet")) / 2**20
        emit(
            {
                "benchmark": "generator",
                "driver_rows": rows,
                "wall_s": measured.wall_s,
                "rows_per_s": round(rows / measured.wall_s),
                "peak_rss_mb": measured.peak_rss_mb,
                "parquet_mb": round(size_mb, 1),
            }
        )


if __name__ == "__main__":
    main()
