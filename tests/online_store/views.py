"""Small Feast views for writer/reader tests (no registry needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

T0 = datetime(2024, 1, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
INT = (ValueType.INT64,)  # entity key types of a view keyed by one Int64 join key


def driver_view(name: str = "stats", ttl: timedelta = timedelta(0)) -> FeatureView:
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    return FeatureView(
        name=name,
        entities=[driver],
        schema=[
            Field(name="driver_id", dtype=Int64),
            Field(name="rate", dtype=Float64),
            Field(name="label", dtype=String),
        ],
        source=FileSource(
            path="unused.parquet", timestamp_field="event_ts", created_timestamp_column="created"
        ),
        ttl=ttl,
    )


def rows(
    *items: tuple[int, float | None, str | None, datetime], created: list[datetime] | None = None
) -> pa.Table:
    data: dict[str, Any] = {
        "driver_id": pa.array([i[0] for i in items], pa.int64()),
        "rate": pa.array([i[1] for i in items], pa.float64()),
        "label": pa.array([i[2] for i in items], pa.string()),
        "event_ts": pa.array([i[3] for i in items], TS),
    }
    if created is not None:
        data["created"] = pa.array(created, TS)
    return pa.table(data)


def parquet_views(
    parquet: Path, *, extra: Any = None, views: tuple[str, ...] = ("a", "b")
) -> list[Any]:
    """Views ``a`` and ``b`` (one Float64 each, plus ``bad`` of type ``extra``) on ``parquet``."""
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    src = FileSource(path=str(parquet), timestamp_field="event_ts")
    out: list[Any] = [driver]
    for name in views:
        schema = [Field(name="driver_id", dtype=Int64), Field(name=f"{name}_x", dtype=Float64)]
        if extra is not None:
            schema.append(Field(name="bad", dtype=extra))
        out.append(
            FeatureView(name=name, entities=[driver], schema=schema, source=src, ttl=timedelta(0))
        )
    return out
