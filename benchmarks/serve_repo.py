"""Feature definitions and data for the serving benchmark (copied into a throwaway repo).

Three views with ten features each and different join keys (int64 driver, string
customer, compound driver x customer), an on-demand view fed by request data (twice: once
tagged row-wise), and a feature service for each that mixes them, so every benchmark case
reads real Feast objects.
This file is both imported by ``serve_bench.py`` (for ``write_data``) and copied as
the repo's ``definitions.py`` for ``feast apply``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Bool, Float32, Float64, Int64, String

TYPES = [Float32, Float64, Int64, Float64, Float32, Int64, Float64, String, Bool, Float64]
ARROW = {Float32: pa.float32(), Float64: pa.float64(), Int64: pa.int64(), String: pa.string(),
         Bool: pa.bool_()}  # fmt: skip

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)


def _view(name: str, entities: list[Entity]) -> FeatureView:
    return FeatureView(
        name=name,
        entities=entities,
        ttl=timedelta(days=7),
        schema=[Field(name=f"f{i}", dtype=t) for i, t in enumerate(TYPES)],
        source=FileSource(
            name=f"{name}_source",
            path=f"data/{name}.parquet",
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
        ),
        online=True,
    )


bench_driver = _view("bench_driver", [driver])
bench_customer = _view("bench_customer", [customer])
bench_pair = _view("bench_pair", [driver, customer])

trip = RequestSource(name="bench_trip", schema=[Field(name="distance_km", dtype=Float64)])


@on_demand_feature_view(
    sources=[bench_driver, trip],
    schema=[Field(name="fare", dtype=Float64)],
    mode="pandas",
)
def bench_fare(inputs: pd.DataFrame) -> pd.DataFrame:
    """A price from a stored feature and request data."""
    out = pd.DataFrame()
    out["fare"] = 2.5 + inputs["distance_km"] * inputs["f1"].fillna(1.0)
    return out


bench_service = FeatureService(
    name="bench_service",
    features=[bench_driver[["f0", "f1", "f2", "f3", "f4"]], bench_customer[["f0"]], bench_fare],
)


@on_demand_feature_view(
    sources=[bench_driver, trip],
    schema=[Field(name="fare", dtype=Float64)],
    mode="pandas",
    tags={"featurestore.row_wise": "true"},  # concurrent lookups may share a call (ours)
)
def bench_fare_rows(inputs: pd.DataFrame) -> pd.DataFrame:
    """``bench_fare`` tagged row-wise: each fare depends on its own row alone."""
    out = pd.DataFrame()
    out["fare"] = 2.5 + inputs["distance_km"] * inputs["f1"].fillna(1.0)
    return out


bench_service_rows = FeatureService(
    name="bench_service_rows",
    features=[
        bench_driver[["f0", "f1", "f2", "f3", "f4"]],
        bench_customer[["f0"]],
        bench_fare_rows,
    ],
)


def driver_ids(n: int) -> list[int]:
    return list(range(1, n + 1))


def customer_ids(n: int) -> list[str]:
    return [f"c{i:07d}" for i in range(1, n + 1)]


def write_data(data_dir: Path, *, entities: int, seed: int = 5) -> datetime:
    """One row per entity for each view, an hour old; returns the event time."""
    rng = np.random.default_rng(seed)
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    data_dir.mkdir(parents=True, exist_ok=True)
    keys = {
        "bench_driver": {"driver_id": pa.array(driver_ids(entities), pa.int64())},
        "bench_customer": {"customer_id": pa.array(customer_ids(entities))},
        "bench_pair": {
            "driver_id": pa.array(driver_ids(entities), pa.int64()),
            "customer_id": pa.array(customer_ids(entities)),
        },
    }
    for name, columns in keys.items():
        cols: dict[str, pa.Array] = dict(columns)
        for i, t in enumerate(TYPES):
            if t == String:
                values: object = [f"s{v}" for v in rng.integers(0, 100, entities)]
            elif t == Bool:
                values = rng.random(entities) < 0.5
            elif t == Int64:
                values = rng.integers(0, 1000, entities)
            else:
                values = rng.random(entities) * 10
            cols[f"f{i}"] = pa.array(values, ARROW[t])
        ts = pa.array([when] * entities, pa.timestamp("us", tz="UTC"))
        cols["event_timestamp"] = ts
        cols["created"] = ts
        pq.write_table(pa.table(cols), data_dir / f"{name}.parquet")
    return when
