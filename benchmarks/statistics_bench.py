"""Cost of profiling rows as they stream (what materialize and pushes pay per row).

    .venv/bin/python -m benchmarks.statistics_bench [--rows 1000000] [--columns 10]

Float64 columns of normal noise in 20,000-row batches (the engine's default batch size),
through :class:`foundation.statistics.TableProfiler`; prints one JSON line with the best of
three runs, next to a plain pandas ``describe()`` of the same table for scale.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa

from benchmarks.common import emit
from foundation.statistics import TableProfiler
from online_store.write_plan import DEFAULT_BATCH_ROWS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(args.columns)]
    table = pa.table({n: rng.normal(size=args.rows) for n in names})
    batches = table.to_batches(max_chunksize=DEFAULT_BATCH_ROWS)
    ours = []
    for _ in range(3):
        start = time.perf_counter()
        profiler = TableProfiler(names)
        for batch in batches:
            profiler.update(batch)
        profiler.finish()
        ours.append(time.perf_counter() - start)
    frame = table.to_pandas()
    start = time.perf_counter()
    frame.describe()
    describe = time.perf_counter() - start
    emit(
        {
            "rows": args.rows,
            "columns": args.columns,
            "profile_s": round(min(ours), 3),
            "ns_per_value": round(1e9 * min(ours) / (args.rows * args.columns), 1),
            "pandas_describe_s": round(describe, 3),
        }
    )


if __name__ == "__main__":
    main()
