"""Child process of ``materialize_bench``: one ``FeatureStore.materialize`` call, timed.

python -m benchmarks.materialize_child REPO START END   -> {"materialize_s": ...}
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime

from feast import FeatureStore


def peak_rss_mb() -> float:
    """This process's own peak RSS (``VmHWM``).

    Not ``getrusage``: on Linux ``ru_maxrss`` survives ``execve``, so a child spawned by a
    big parent would report the parent's footprint as its floor.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    repo, start, end = sys.argv[1], sys.argv[2], sys.argv[3]
    store = FeatureStore(repo_path=repo)
    if "--imports-only" in sys.argv:
        provider = store._get_provider()
        _ = (provider.online_store, provider.offline_store, provider.batch_engine)
        store.list_feature_views()
        print(json.dumps({"materialize_s": 0.0, "peak_rss_mb": round(peak_rss_mb(), 1)}))
        return
    started = time.perf_counter()
    store.materialize(datetime.fromisoformat(start), datetime.fromisoformat(end))
    elapsed = time.perf_counter() - started
    print(json.dumps({"materialize_s": round(elapsed, 2), "peak_rss_mb": round(peak_rss_mb(), 1)}))


if __name__ == "__main__":
    main()
