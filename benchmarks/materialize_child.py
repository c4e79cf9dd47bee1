"""Child process of ``materialize_bench``: one ``FeatureStore.materialize`` call, timed.

python -m benchmarks.materialize_child REPO START END   -> {"materialize_s": ...}
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime

from feast import FeatureStore


def main() -> None:
    repo, start, end = sys.argv[1], sys.argv[2], sys.argv[3]
    store = FeatureStore(repo_path=repo)
    started = time.perf_counter()
    store.materialize(datetime.fromisoformat(start), datetime.fromisoformat(end))
    elapsed = time.perf_counter() - started
    print(json.dumps({"materialize_s": round(elapsed, 2)}))


if __name__ == "__main__":
    main()
