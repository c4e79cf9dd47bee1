"""A Spark Python worker writes its partition without importing Feast.

Spark ships the engine's partition writer to each Python worker pickled (cloudpickle, by
reference to :mod:`online_store.spark_writer`). Importing Feast costs a worker seconds and a
few hundred MB, so the writer, its :class:`WriteSpec` and the codec must unpickle and run
without it. The worker is played by a fresh interpreter: it loads the pickled writer, writes
every supported type to Redis, and reports which modules it imported; the bytes must be the
in-process writer's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import redis
from pyspark import cloudpickle

from online_store.spark_writer import partition_writer
from online_store.write_plan import WriteSpec
from online_store.writer import write_batches
from tests.online_store.conftest import snapshot
from tests.online_store.data import typed_objects, write_typed_parquet

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import json, pickle, sys
import pyarrow.parquet as pq
write = pickle.loads(open(sys.argv[1], "rb").read())
batches = pq.read_table(sys.argv[2]).to_batches(max_chunksize=70)
(stats,) = list(write(iter(batches)))
print(json.dumps({
    "feast_modules": sorted(m for m in sys.modules if m == "feast" or m.startswith("feast.")),
    "rows_in": stats.column("rows_in")[0].as_py(),
    "rows_written": stats.column("rows_written")[0].as_py(),
}))
"""


def test_a_worker_writes_its_partition_without_importing_feast(
    tmp_path: Path, module_redis: str
) -> None:
    parquet = tmp_path / "typed.parquet"
    table = write_typed_parquet(parquet, n=400, entities=90, seed=11)
    drivers = len(set(table.column("driver_id").to_pylist()))
    view = next(o for o in typed_objects(parquet)() if getattr(o, "name", "") == "typed")
    spec = WriteSpec.from_feature_view(view)
    writer = partition_writer(
        target=module_redis + "3",
        cluster=False,
        timeout=10.0,
        spec=spec,
        project="p",
        key_ttl_seconds=None,
        chunk_rows=50,
        accumulator=set(),  # anything with .add(rows) stands in for Spark's accumulator
    )
    pickled = tmp_path / "writer.pkl"
    pickled.write_bytes(cloudpickle.dumps(writer))

    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(pickled), str(parquet)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["feast_modules"] == []
    assert report["rows_in"] == 400
    # Batches come in file order, so a key can be written again by a newer row later on.
    assert drivers <= report["rows_written"] <= 400

    in_process = write_batches(
        redis.Redis.from_url(module_redis + "4"),
        spec,
        pq.read_table(parquet).to_batches(max_chunksize=70),
        project="p",
        chunk_rows=50,
    )
    assert in_process.rows_written == report["rows_written"]
    worker_hashes = snapshot(module_redis + "3")
    assert len(worker_hashes) == drivers
    assert worker_hashes == snapshot(module_redis + "4")
