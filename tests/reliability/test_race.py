"""Lookups racing a materialization never see a half-written row.

Every row of version v has all eight features equal to v. While `feast materialize`
writes versions 2, 3 and 4 over 100k drivers, the service answers lookups in a loop;
each looked-up entity must carry one version in all its features (a torn row would mix
two). The test also checks that the lookups really overlapped the writes: some lookup
saw different entities at different versions.
"""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from service.app import create_app
from service.settings import Settings
from tests.service.conftest import AppClient, feast_cli

DRIVERS = 50_000
FEATURES = [f"f{i}" for i in range(8)]
BASE = datetime(2026, 1, 1, tzinfo=UTC)

DEFINITIONS = f"""
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Int64

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
source = FileSource(path="data/race.parquet", timestamp_field="event_timestamp",
                    created_timestamp_column="created")
race = FeatureView(name="race", entities=[driver], ttl=timedelta(0), source=source,
                   schema=[Field(name=n, dtype=Int64) for n in {FEATURES!r}])
"""


def _write_repo(path: Path, redis_url: str) -> str:
    (path / "data").mkdir(parents=True)
    (path / "definitions.py").write_text(DEFINITIONS)
    registry = f"sqlite:///{path / 'registry.db'}"
    config = {
        "project": "race",
        "provider": "local",
        "registry": {"registry_type": "sql", "path": registry, "cache_ttl_seconds": 0},
        "online_store": {
            "type": "online_store.store.FastRedisOnlineStore",
            "connection_string": redis_url,
        },
        "offline_store": {"type": "offline_store.store.DuckDBParquetOfflineStore"},
        "batch_engine": {"type": "online_store.engine.StreamingMaterializationEngine"},
        "entity_key_serialization_version": 3,
    }
    (path / "feature_store.yaml").write_text(yaml.safe_dump(config))
    ids = np.arange(1, DRIVERS + 1, dtype=np.int64)
    tables = []
    for version in range(1, 5):
        ts = pa.array(
            np.full(DRIVERS, (BASE + timedelta(hours=version)).timestamp() * 1e6, dtype=np.int64)
        )
        columns = {"driver_id": ids, "event_timestamp": ts.cast(pa.timestamp("us", tz="UTC"))}
        columns["created"] = columns["event_timestamp"]
        columns.update({name: np.full(DRIVERS, version, dtype=np.int64) for name in FEATURES})
        tables.append(pa.table(columns))
    pq.write_table(pa.concat_tables(tables), path / "data" / "race.parquet")
    return registry


def _window(version: int) -> tuple[str, str]:
    start = BASE + timedelta(hours=version) - timedelta(minutes=1)
    return start.isoformat(), (start + timedelta(minutes=2)).isoformat()


def test_lookups_during_materialize_never_see_a_torn_row(tmp_path: Path, redis_url: str) -> None:
    repo = tmp_path / "repo"
    registry = _write_repo(repo, redis_url)
    feast_cli(repo, redis_url, registry, "apply")
    feast_cli(repo, redis_url, registry, "materialize", *_window(1))

    settings = Settings(repo_path=repo, redis_url=redis_url, registry_url=registry)
    app = AppClient(create_app(settings))
    done = threading.Event()
    torn: list[dict[str, list[int]]] = []
    seen_versions: set[int] = set()
    mixed_reads = 0
    reads = 0

    def read_loop() -> None:
        nonlocal mixed_reads, reads
        rng = random.Random(3)
        while not done.is_set():
            ids = rng.sample(range(1, DRIVERS + 1), 200)
            body = app.post(
                "/get-online-features",
                json={"features": [f"race:{n}" for n in FEATURES], "entities": {"driver_id": ids}},
            ).json()
            by_name = dict(zip(body["metadata"]["feature_names"], body["results"], strict=True))
            versions_in_read = set()
            for row in range(len(ids)):
                values = {by_name[n]["values"][row] for n in FEATURES}
                if len(values) != 1:
                    torn.append({"driver_id": [ids[row]], "values": sorted(values)})
                versions_in_read |= values
            seen_versions.update(versions_in_read)
            mixed_reads += len(versions_in_read) > 1
            reads += 1

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for version in (2, 3):
            feast_cli(repo, redis_url, registry, "materialize", *_window(version))
    finally:
        done.set()
        reader.join(timeout=60)
        app.close()

    assert torn == []
    assert seen_versions >= {1, 3}
    assert reads > 20
    assert mixed_reads > 0, "no lookup overlapped a write; the race was not exercised"
