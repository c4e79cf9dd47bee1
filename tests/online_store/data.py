"""Deterministic test data covering every supported type, and the Feast objects over it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from feast import Entity, FeatureView, Field, FileSource
from feast.types import (
    Array,
    Bool,
    Bytes,
    Float32,
    Float64,
    Int32,
    Int64,
    String,
    UnixTimestamp,
)
from feast.value_type import ValueType

T0 = datetime(2024, 1, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")

SCALARS: dict[str, tuple[pa.DataType, Any]] = {
    "f_i32": (pa.int32(), Int32),
    "f_i64": (pa.int64(), Int64),
    "f_f32": (pa.float32(), Float32),
    "f_f64": (pa.float64(), Float64),
    "f_bool": (pa.bool_(), Bool),
    "f_str": (pa.string(), String),
    "f_bytes": (pa.binary(), Bytes),
    "f_ts": (TS, UnixTimestamp),
}
LISTS: dict[str, tuple[pa.DataType, Any]] = {
    "l_" + name[2:]: (pa.list_(arrow), Array(feast)) for name, (arrow, feast) in SCALARS.items()
}
ALL_TYPES = {**SCALARS, **LISTS}


def _scalar(rng: np.random.Generator, arrow: pa.DataType, n: int) -> list[Any]:
    if pa.types.is_integer(arrow):
        bits = 31 if arrow == pa.int32() else 40
        return [int(x) for x in rng.integers(-(2**bits), 2**bits, n)]
    if pa.types.is_floating(arrow):
        return [float(x) for x in rng.normal(0, 1e3, n)]
    if pa.types.is_boolean(arrow):
        return [bool(x) for x in rng.integers(0, 2, n)]
    if pa.types.is_string(arrow):
        return [
            "".join(chr(c) for c in rng.integers(97, 123, int(k))) + "é"
            for k in rng.integers(0, 12, n)
        ]
    if pa.types.is_binary(arrow):
        return [bytes(rng.integers(0, 256, int(k), dtype=np.uint8)) for k in rng.integers(0, 12, n)]
    return [
        T0 + timedelta(seconds=int(s), microseconds=int(u))
        for s, u in zip(rng.integers(-(10**8), 10**8, n), rng.integers(0, 10**6, n), strict=True)
    ]


def typed_columns(rng: np.random.Generator, n: int, *, nulls: bool) -> dict[str, pa.Array]:
    """One column per supported feature type, ~10% nulls (and empty lists) when asked."""
    out: dict[str, pa.Array] = {}
    for name, (arrow, _) in ALL_TYPES.items():
        if pa.types.is_list(arrow):
            lengths = rng.integers(0, 4, n)
            values: list[Any] = [_scalar(rng, arrow.value_type, int(k)) for k in lengths]
        else:
            values = _scalar(rng, arrow, n)
        if nulls:
            for i in np.flatnonzero(rng.random(n) < 0.1):
                values[i] = None
        out[name] = pa.array(values, type=arrow)
    return out


def write_typed_parquet(
    path: Path, *, n: int, entities: int, seed: int, nulls: bool = True
) -> pa.Table:
    """Rows for every view in :func:`typed_objects`; several rows per entity, with ties."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, entities, n)
    event = [T0 + timedelta(minutes=int(m)) for m in rng.integers(0, 60 * 24 * 10, n)]
    created = [T0 + timedelta(seconds=int(s)) for s in rng.integers(0, 1000, n)]
    columns: dict[str, pa.Array] = {
        "driver_id": pa.array(ids, pa.int64()),
        "rider_id": pa.array([f"r{i}" for i in ids]),
        "zone": pa.array(ids % 1000, pa.int32()),
        "device": pa.array([int(i).to_bytes(4, "big") for i in ids], pa.binary()),
        "event_timestamp": pa.array(event, TS),
        "created": pa.array(created, TS),
        **typed_columns(rng, n, nulls=nulls),
    }
    table = pa.table(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return table


def _schema(names: Sequence[str]) -> list[Field]:
    return [Field(name=name, dtype=ALL_TYPES[name][1]) for name in names]


def typed_objects(parquet: Path, *, ttl: timedelta = timedelta(0)) -> Callable[[], list[Any]]:
    """Factory of entities and views: int64, string, int32, bytes and compound keys."""

    def build() -> list[Any]:
        src = FileSource(
            name="typed_source",
            path=str(parquet),
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
        )
        driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
        rider = Entity(name="rider", join_keys=["rider_id"], value_type=ValueType.STRING)
        zone = Entity(name="zone", join_keys=["zone"], value_type=ValueType.INT32)
        device = Entity(name="device", join_keys=["device"], value_type=ValueType.BYTES)
        views = [
            FeatureView(
                name="typed",
                entities=[driver],
                schema=[Field(name="driver_id", dtype=Int64), *_schema(list(ALL_TYPES))],
                source=src,
                ttl=ttl,
            ),
            FeatureView(
                name="by_rider",
                entities=[rider],
                schema=[Field(name="rider_id", dtype=String), *_schema(["f_f64", "f_str"])],
                source=src,
                ttl=ttl,
            ),
            FeatureView(
                name="by_zone",
                entities=[zone],
                schema=[Field(name="zone", dtype=Int32), *_schema(["f_i64", "l_f64"])],
                source=src,
                ttl=ttl,
            ),
            FeatureView(
                name="by_device",
                entities=[device],
                schema=[Field(name="device", dtype=Bytes), *_schema(["f_bool"])],
                source=src,
                ttl=ttl,
            ),
            FeatureView(
                name="pair",
                entities=[rider, driver],
                schema=[
                    Field(name="rider_id", dtype=String),
                    Field(name="driver_id", dtype=Int64),
                    *_schema(["f_i32", "l_str"]),
                ],
                source=src,
                ttl=ttl,
            ),
        ]
        return [driver, rider, zone, device, *views]

    return build
