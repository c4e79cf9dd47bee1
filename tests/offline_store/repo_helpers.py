"""Throwaway Feast repos for offline store tests: SQL registry on SQLite, our offline store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

from foundation.registry import FeatureStore

OUR_STORE = "offline_store.store.DuckDBParquetOfflineStore"
SPARK_STORE = "offline_store.spark.SparkOfflineStore"


def write_repo_yaml(
    root: Path,
    *,
    offline_store: str = OUR_STORE,
    online: str = "sqlite",
    redis_url: str | None = None,
    extra_offline: str = "",
) -> None:
    """Write ``feature_store.yaml`` for a tmp repo (SQLite registry, chosen offline store)."""
    if online == "redis":
        assert redis_url is not None
        host_port = redis_url.split("://", 1)[1].split("/", 1)[0]
        online_yaml = f"  type: redis\n  connection_string: {host_port}\n"
    else:
        online_yaml = f"  type: sqlite\n  path: {root}/online.db\n"
    (root / "feature_store.yaml").write_text(
        "project: pit_tests\n"
        "provider: local\n"
        "registry:\n"
        "  registry_type: sql\n"
        f"  path: sqlite:///{root}/registry.db\n"
        "  cache_ttl_seconds: 0\n"
        f"online_store:\n{online_yaml}"
        f"offline_store:\n  type: {offline_store}\n{extra_offline}"
        "entity_key_serialization_version: 3\n"
    )


def make_store(root: Path, objects: Sequence[Any], **yaml_kwargs: Any) -> FeatureStore:
    """Create the repo at ``root``, apply ``objects`` and return the store."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    write_repo_yaml(root, **yaml_kwargs)
    store = FeatureStore(repo_path=str(root))
    store.apply(list(objects))
    return store


DRIVER = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
CUSTOMER = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)


def three_views(
    ttl_driver: timedelta = timedelta(minutes=5),
    ttl_pair: timedelta = timedelta(minutes=10),
) -> list[Any]:
    """Driver view (int key, TTL), customer view (string key, unlimited), pair (compound)."""
    driver_src = FileSource(
        name="driver_src",
        path="data/driver.parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    customer_src = FileSource(
        name="customer_src",
        path="data/customer.parquet",
        timestamp_field="ts",
        created_timestamp_column="created",
        # Field mapping: the source column 'bal' is the feature 'balance'.
        field_mapping={"bal": "balance"},
    )
    pair_src = FileSource(
        name="pair_src",
        path="data/pair.parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    driver_fv = FeatureView(
        name="driver_fv",
        entities=[DRIVER],
        ttl=ttl_driver,
        schema=[Field(name="rate", dtype=Float64), Field(name="trips", dtype=Int64)],
        source=driver_src,
    )
    customer_fv = FeatureView(
        name="customer_fv",
        entities=[CUSTOMER],
        ttl=timedelta(0),
        schema=[Field(name="balance", dtype=Float64), Field(name="tier", dtype=String)],
        source=customer_src,
    )
    pair_fv = FeatureView(
        name="pair_fv",
        entities=[DRIVER, CUSTOMER],
        ttl=ttl_pair,
        schema=[Field(name="together", dtype=Int64)],
        source=pair_src,
    )
    return [DRIVER, CUSTOMER, driver_src, customer_src, pair_src, driver_fv, customer_fv, pair_fv]


DRIVER_SCHEMA = pa.schema(
    [
        ("driver_id", pa.int64()),
        ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ("created", pa.timestamp("us", tz="UTC")),
        ("rate", pa.float64()),
        ("trips", pa.int64()),
    ]
)
CUSTOMER_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("created", pa.timestamp("us", tz="UTC")),
        ("bal", pa.float64()),
        ("tier", pa.string()),
    ]
)
PAIR_SCHEMA = pa.schema(
    [
        ("driver_id", pa.int64()),
        ("customer_id", pa.string()),
        ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ("created", pa.timestamp("us", tz="UTC")),
        ("together", pa.int64()),
    ]
)


def write_rows(path: Path, schema: pa.Schema, rows: list[dict[str, Any]]) -> None:
    """Write rows (dicts) as one Parquet file with an explicit schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
