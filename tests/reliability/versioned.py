"""A repo whose rows carry their version in every feature: torn writes are visible.

View ``race`` (driver_id int64 -> f0..f7 int64): for version v = 1..4, every driver has
one row at ``BASE + v hours`` with all eight features equal to v.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

FEATURES = [f"f{i}" for i in range(8)]
BASE = datetime(2026, 1, 1, tzinfo=UTC)
VERSIONS = (1, 2, 3, 4)

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


def write_versioned_repo(
    path: Path, redis_url: str, *, drivers: int, online_options: dict[str, object] | None = None
) -> str:
    """Write definitions, feature_store.yaml (our plugins) and data; return the registry URL."""
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
            **(online_options or {}),
        },
        "offline_store": {"type": "offline_store.store.DuckDBParquetOfflineStore"},
        "batch_engine": {"type": "online_store.engine.StreamingMaterializationEngine"},
        "entity_key_serialization_version": 3,
    }
    (path / "feature_store.yaml").write_text(yaml.safe_dump(config))
    ids = np.arange(1, drivers + 1, dtype=np.int64)
    tables = []
    for version in VERSIONS:
        micros = int((BASE + timedelta(hours=version)).timestamp() * 1_000_000)
        ts = pa.array(np.full(drivers, micros, dtype=np.int64)).cast(pa.timestamp("us", tz="UTC"))
        columns: dict[str, object] = {"driver_id": ids, "event_timestamp": ts, "created": ts}
        columns.update({name: np.full(drivers, version, dtype=np.int64) for name in FEATURES})
        tables.append(pa.table(columns))
    pq.write_table(pa.concat_tables(tables), path / "data" / "race.parquet")
    return registry


def window(version: int) -> tuple[str, str]:
    """A materialization window holding exactly the rows of ``version``."""
    start = BASE + timedelta(hours=version) - timedelta(minutes=1)
    return start.isoformat(), (start + timedelta(minutes=2)).isoformat()
