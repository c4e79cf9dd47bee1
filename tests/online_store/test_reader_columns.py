"""Column-at-a-time decoding equals a naive per-value reading, for every status and type.

Hashes are written by hand with Feast's protobufs (not our writer), with many entities
so the bulk column paths run: mixed value kinds in one column, stored nulls, fields
missing from a hash, missing entities, stale rows past the TTL, duplicate rows.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from feast.protos.feast.types.Value_pb2 import Value
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from online_store.codec import field_name, ts_field
from online_store.decode import decode_column, decode_value
from online_store.keys import entity_key_from_values
from online_store.reader import (
    NOT_FOUND,
    NULL_VALUE,
    OUTSIDE_MAX_AGE,
    PRESENT,
    ReadPlan,
    ViewReadSpec,
)

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
FEATURES = ("dbl", "flt", "i64", "i32", "flag", "text", "blob", "when", "mixed", "lst")


def _value(kind: str, rng: random.Random) -> bytes:
    if kind == "null":
        return b""
    if kind == "dbl":
        return Value(
            double_val=rng.choice([rng.uniform(-1e9, 1e9), 0.0, math.inf])
        ).SerializeToString()
    if kind == "flt":
        return Value(float_val=rng.uniform(-10, 10)).SerializeToString()
    if kind == "i64":
        v = rng.choice(
            [0, 1, 127, 128, 16383, 16384, -1, 2**63 - 1, -(2**63), rng.randint(0, 1000)]
        )
        return Value(int64_val=v).SerializeToString()
    if kind == "i32":
        return Value(int32_val=rng.choice([0, 5, 300, -7, 2**31 - 1])).SerializeToString()
    if kind == "flag":
        return Value(bool_val=rng.random() < 0.5).SerializeToString()
    if kind == "text":
        return Value(string_val="é" * rng.choice([0, 1, 5, 63, 64, 200])).SerializeToString()
    if kind == "blob":
        return Value(
            bytes_val=bytes(rng.randrange(256) for _ in range(rng.randint(0, 9)))
        ).SerializeToString()
    if kind == "when":
        return Value(unix_timestamp_val=rng.choice([1_700_000_000, -(2**63)])).SerializeToString()
    if kind == "lst":
        v = Value()
        v.double_list_val.val.extend([1.5, -2.0])
        return v.SerializeToString()
    raise AssertionError(kind)


def _timestamp(when: datetime) -> bytes:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts.SerializeToString()


@pytest.mark.parametrize("seed", range(6))
def test_column_read_equals_per_value_reading(redis_url: str, seed: int) -> None:
    rng = random.Random(seed)
    client = redis.Redis.from_url(redis_url)
    spec = ViewReadSpec("v", ("driver_id",), (ValueType.INT64,), FEATURES, 3600 * 1_000_000)
    stored: dict[int, dict[bytes, bytes]] = {}
    for entity in range(1, 61):
        if rng.random() < 0.15:
            continue  # no row: NOT_FOUND
        fields: dict[bytes, bytes] = {}
        age = rng.choice([timedelta(minutes=5), timedelta(minutes=5), timedelta(hours=2),
                          timedelta(seconds=3600)])  # fmt: skip
        fields[ts_field("v")] = _timestamp(NOW - age + timedelta(microseconds=rng.choice([0, 250])))
        for feature in FEATURES:
            roll = rng.random()
            if roll < 0.05:
                continue  # field missing from the hash: NOT_FOUND for this feature
            if roll < 0.12 and seed % 2:
                kind = "null"
            elif feature == "mixed":
                kind = rng.choice(["dbl", "i64", "text", "flag", "null"])
            else:
                kind = feature
            fields[field_name("v", feature)] = _value(kind, rng)
        key = entity_key_from_values((entity,), ("driver_id",), (ValueType.INT64,), "p")
        client.hset(key, mapping=fields)  # type: ignore[arg-type]
        stored[entity] = fields

    rows = [rng.randint(1, 70) for _ in range(rng.choice([9, 40, 120]))]
    if seed >= 3:
        rows = sorted(set(rows))  # all distinct: the no-fan-out path
    result = ReadPlan.compile("p", [spec]).read(client, {"driver_id": rows}, now=NOW)

    for feature in FEATURES:
        column = result.columns[f"v:{feature}"]
        expected: list[tuple[Any, str, datetime | None]] = []
        for entity in rows:
            fields = stored.get(entity)
            if fields is None:
                expected.append((None, NOT_FOUND, None))
                continue
            ts = Timestamp.FromString(fields[ts_field("v")]).ToDatetime(tzinfo=UTC)
            if (NOW - ts).total_seconds() > 3600:
                expected.append((None, OUTSIDE_MAX_AGE, ts))
                continue
            raw = fields.get(field_name("v", feature))
            if raw is None:
                expected.append((None, NOT_FOUND, None))
                continue
            value = decode_value(raw)
            expected.append((value, NULL_VALUE if value is None else PRESENT, ts))
        got = list(zip(column.values, column.statuses, column.event_timestamps, strict=True))
        assert len(got) == len(expected)
        for (gv, gs, gt), (ev, es, et) in zip(got, expected, strict=True):
            assert (gs, gt) == (es, et), feature
            assert type(gv) is type(ev), (feature, gv, ev)
            assert gv == ev, (feature, gv, ev)


@pytest.mark.parametrize("seed", range(20))
def test_decode_column_equals_decode_value(seed: int) -> None:
    rng = random.Random(seed)
    kinds = ["dbl", "flt", "i64", "i32", "flag", "text", "blob", "when", "lst"]
    kind = rng.choice(kinds)
    raws = [
        _value(rng.choice(kinds) if seed % 3 == 0 else kind, rng)
        for _ in range(rng.choice([1, 7, 8, 50]))
    ]
    raws = [raw for raw in raws if raw] or [_value("dbl", rng)]
    got = decode_column(raws)
    want = [decode_value(raw) for raw in raws]
    assert [type(v) for v in got] == [type(v) for v in want]
    assert got == want
