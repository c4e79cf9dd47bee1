"""The codec against Feast's own serialization, property by property (Hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from foundation.errors import InvalidEntityError, UnsupportedTypeError
from online_store import blocks
from online_store.blocks import decimal, varints
from online_store.codec import (
    check_feature_type,
    encode_timestamps,
    encode_values,
    event_micros,
    field_name,
    ts_field,
    value_parts,
    varint,
)
from online_store.decode import decode_timestamp, decode_value
from online_store.keys import encode_entity_keys
from online_store.writer import _resp_hset_buffer

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT64 = st.integers(-(2**63), 2**63 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
BINARY = st.binary(max_size=20)
DATETIMES = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


def feast_bytes(arr: pa.Array, vt: ValueType) -> list[bytes]:
    """What Feast's materialization writes for a column (``_columns_to_proto_values``)."""
    protos = python_values_to_proto_values(arr.to_numpy(zero_copy_only=False), vt)
    return [p.SerializeToString() for p in protos]


def _key_value(value: Any, vt: ValueType) -> Value:
    field = {
        ValueType.INT64: "int64_val",
        ValueType.INT32: "int32_val",
        ValueType.STRING: "string_val",
        ValueType.BYTES: "bytes_val",
    }[vt]
    return Value(**{field: value})


KEY_CASES = [
    (INT64, ValueType.INT64, pa.int64()),
    (INT32, ValueType.INT32, pa.int32()),
    (TEXT, ValueType.STRING, pa.string()),
    (BINARY, ValueType.BYTES, pa.binary()),
]


@pytest.mark.parametrize(("strategy", "vt", "arrow"), KEY_CASES, ids=lambda c: str(c))
@SETTINGS
@given(data=st.data(), project=TEXT.filter(bool))
def test_entity_keys_equal_feast_serialize_entity_key(
    strategy: st.SearchStrategy[Any],
    vt: ValueType,
    arrow: pa.DataType,
    data: st.DataObject,
    project: str,
) -> None:
    values = data.draw(st.lists(strategy, min_size=1, max_size=20))
    ours = encode_entity_keys([pa.array(values, arrow)], ["k"], [vt], project)
    expected = [
        serialize_entity_key(EntityKey(join_keys=["k"], entity_values=[_key_value(v, vt)]))
        + project.encode()
        for v in values
    ]
    assert ours == expected


WIDE_KEY_CASES = [
    (st.integers(-(2**40), 2**40), ValueType.INT32, pa.int64()),
    (st.integers(0, 2**64 - 1), ValueType.INT64, pa.uint64()),
    (st.floats(-(2.0**34), 2.0**34), ValueType.INT32, pa.float64()),
    (st.floats(allow_nan=True, allow_infinity=True), ValueType.INT64, pa.float64()),
    (
        st.decimals(-(2**34), 2**34, allow_nan=False, places=1),
        ValueType.INT32,
        pa.decimal128(20, 1),
    ),
]


@pytest.mark.parametrize(("strategy", "vt", "arrow"), WIDE_KEY_CASES, ids=lambda c: str(c))
@SETTINGS
@given(data=st.data())
def test_key_values_a_key_cannot_hold_are_refused_where_feast_refuses_them(
    strategy: st.SearchStrategy[Any], vt: ValueType, arrow: pa.DataType, data: st.DataObject
) -> None:
    """A column wider than its Int32/Int64 key: Feast refuses a value out of the key's
    range, NaN or infinite (its conversion raises, or, for a column of NaN only, gives an
    empty value its key serialization refuses); a cast would wrap it into another entity's
    key. Every other value gives Feast's key (floats cut toward zero)."""
    values = data.draw(st.lists(strategy, min_size=1, max_size=20))
    column = pa.array(values, arrow)
    try:
        protos = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), vt)
        expected = [
            serialize_entity_key(EntityKey(join_keys=["k"], entity_values=[proto])) + b"p"
            for proto in protos
        ]
    except (ValueError, OverflowError):
        with pytest.raises(InvalidEntityError, match="join key column 'k' holds"):
            encode_entity_keys([column], ["k"], [vt], "p")
        return
    assert encode_entity_keys([column], ["k"], [vt], "p") == expected


def test_a_string_key_column_that_is_not_integers_is_refused_by_name() -> None:
    """Strings of digits make the Int64 key Feast's conversion makes ("7" is key 7); other
    strings are refused naming the column, as Feast's conversion raises on them."""
    assert encode_entity_keys([pa.array(["7"])], ["k"], [ValueType.INT64], "p") == (
        encode_entity_keys([pa.array([7])], ["k"], [ValueType.INT64], "p")
    )
    with pytest.raises(ValueError, match="invalid literal"):
        python_values_to_proto_values(np.array(["7.5"], dtype=object), ValueType.INT64)
    with pytest.raises(InvalidEntityError, match=r"join key column 'k' holds values"):
        encode_entity_keys([pa.array(["7", "7.5"])], ["k"], [ValueType.INT64], "p")


@SETTINGS
@given(
    rows=st.lists(st.tuples(INT64, TEXT, BINARY), min_size=1, max_size=20),
    names=st.lists(
        st.text("abcdefgh_", min_size=1, max_size=6), min_size=3, max_size=3, unique=True
    ),
)
def test_compound_entity_keys_sort_join_keys_like_feast(
    rows: list[tuple[int, str, bytes]], names: list[str]
) -> None:
    types = [ValueType.INT64, ValueType.STRING, ValueType.BYTES]
    arrows = [pa.int64(), pa.string(), pa.binary()]
    columns = [pa.array([r[i] for r in rows], arrows[i]) for i in range(3)]
    ours = encode_entity_keys(columns, names, types, "proj")
    expected = [
        serialize_entity_key(
            EntityKey(
                join_keys=names,
                entity_values=[_key_value(v, t) for v, t in zip(r, types, strict=True)],
            )
        )
        + b"proj"
        for r in rows
    ]
    assert ours == expected


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.one_of(st.none(), strategy), min_size=1, max_size=30)


FLOATS = st.floats(allow_nan=True, allow_infinity=True)
VALUE_CASES: list[tuple[st.SearchStrategy[list[Any]], ValueType, pa.DataType]] = [
    (st.lists(INT64, min_size=1, max_size=30), ValueType.INT64, pa.int64()),
    # Feast routes int columns with nulls through float64; exact only below 2**53.
    (_opt(st.integers(-(2**53), 2**53)), ValueType.INT64, pa.int64()),
    (_opt(INT32), ValueType.INT32, pa.int32()),
    (_opt(FLOATS), ValueType.DOUBLE, pa.float64()),
    (_opt(st.floats(width=32)), ValueType.FLOAT, pa.float32()),
    (_opt(st.booleans()), ValueType.BOOL, pa.bool_()),
    (st.lists(st.booleans(), min_size=1), ValueType.BOOL, pa.bool_()),
    (_opt(TEXT), ValueType.STRING, pa.string()),
    # Feast writes null for b"" when no value in the batch is non-empty (it cannot infer a
    # sample); we always write empty bytes as empty bytes (docs/online-format.md).
    (_opt(BINARY).filter(lambda vs: any(vs)), ValueType.BYTES, pa.binary()),
    (_opt(DATETIMES), ValueType.UNIX_TIMESTAMP, pa.timestamp("us", tz="UTC")),
    (_opt(DATETIMES), ValueType.UNIX_TIMESTAMP, pa.timestamp("ns")),
    (_opt(st.lists(INT64, max_size=5)), ValueType.INT64_LIST, pa.list_(pa.int64())),
    (_opt(st.lists(INT32, max_size=5)), ValueType.INT32_LIST, pa.list_(pa.int32())),
    (
        _opt(st.lists(st.floats(allow_nan=False), max_size=5)),
        ValueType.DOUBLE_LIST,
        pa.list_(pa.float64()),
    ),
    (
        _opt(st.lists(st.floats(width=32, allow_nan=False), max_size=5)),
        ValueType.FLOAT_LIST,
        pa.list_(pa.float32()),
    ),
    (_opt(st.lists(st.booleans(), max_size=5)), ValueType.BOOL_LIST, pa.list_(pa.bool_())),
    (_opt(st.lists(TEXT, max_size=5)), ValueType.STRING_LIST, pa.list_(pa.string())),
    (_opt(st.lists(BINARY, max_size=5)), ValueType.BYTES_LIST, pa.list_(pa.binary())),
    (
        _opt(st.lists(DATETIMES, max_size=5)),
        ValueType.UNIX_TIMESTAMP_LIST,
        pa.list_(pa.timestamp("us")),
    ),
    (
        _opt(st.lists(DATETIMES, max_size=5)),
        ValueType.UNIX_TIMESTAMP_LIST,
        pa.list_(pa.timestamp("ns")),
    ),
]


@pytest.mark.parametrize(("strategy", "vt", "arrow"), VALUE_CASES, ids=lambda c: str(c))
@SETTINGS
@given(data=st.data(), cut=st.integers(0, 3))
def test_values_equal_feast_protobuf_serialization(
    strategy: st.SearchStrategy[list[Any]],
    vt: ValueType,
    arrow: pa.DataType,
    data: st.DataObject,
    cut: int,
) -> None:
    values = data.draw(strategy)
    if pa.types.is_timestamp(arrow) or (
        pa.types.is_list(arrow) and pa.types.is_timestamp(arrow.value_type)
    ):
        # tz-naive Arrow timestamps hold UTC wall time.
        values = [
            None if v is None else [x.replace(tzinfo=None) for x in v] if isinstance(v, list) else v
            for v in values
        ]
    # Sliced arrays too: the encoders read Arrow buffers and must honour the offset.
    arr = pa.array(values, arrow)
    arr = arr.slice(min(cut, len(arr)))
    if vt == ValueType.BYTES:
        # The strategy's "some non-empty value" must still hold after the cut (see above).
        assume(any(arr.to_pylist()))
    assert encode_values(arr, vt) == feast_bytes(arr, vt)


@pytest.mark.parametrize(("strategy", "vt", "arrow"), VALUE_CASES, ids=lambda c: str(c))
@SETTINGS
@given(data=st.data())
def test_decode_value_agrees_with_protobuf(
    strategy: st.SearchStrategy[list[Any]], vt: ValueType, arrow: pa.DataType, data: st.DataObject
) -> None:
    arr = pa.array(data.draw(strategy), arrow)
    for raw in encode_values(arr, vt):
        proto = Value.FromString(raw)
        kind = proto.WhichOneof("val")
        decoded = decode_value(raw)
        if kind is None:
            assert decoded is None
        elif kind.endswith("_list_val"):
            assert decoded == list(getattr(proto, kind).val)
        elif kind == "unix_timestamp_val" and proto.unix_timestamp_val == -(2**63):
            assert decoded is None  # Feast's NaT marker for a null time
        elif kind in ("double_val", "float_val") and np.isnan(getattr(proto, kind)):
            assert np.isnan(decoded)  # type: ignore[arg-type]
        else:
            assert decoded == getattr(proto, kind)


@SETTINGS
@given(times=st.lists(DATETIMES, min_size=1, max_size=30))
def test_event_timestamps_equal_feast_timestamp_bytes(times: list[datetime]) -> None:
    ours = encode_timestamps(event_micros(pa.array(times, pa.timestamp("us", tz="UTC"))))
    expected = []
    for t in times:
        proto = Timestamp()
        proto.FromDatetime(t)
        expected.append(proto.SerializeToString())
    assert ours == expected
    for raw, t in zip(ours, times, strict=True):
        proto = Timestamp.FromString(raw)
        assert decode_timestamp(raw) == (proto.seconds, proto.nanos)
        assert t == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
            seconds=proto.seconds, microseconds=proto.nanos // 1000
        )


def test_nanosecond_event_times_truncate_to_microseconds_like_feast() -> None:
    arr = pa.array([1_700_000_000_123_456_789, -1], pa.timestamp("ns", tz="UTC"))
    assert event_micros(arr).tolist() == [1_700_000_000_123_456, -1]


@given(view=TEXT, feature=TEXT)
@settings(max_examples=100, deadline=None)
def test_field_names_equal_feast_murmur3(view: str, feature: str) -> None:
    assert field_name(view, feature) == _mmh3(f"{view}:{feature}")
    assert ts_field(view) == f"_ts:{view}".encode()


def test_feast_notes_example_key_and_field() -> None:
    key = encode_entity_keys([pa.array([1001])], ["driver_id"], [ValueType.INT64], "my_project")[0]
    assert key.hex() == (
        "01000000"
        "02000000"
        "09000000"
        "6472697665725f6964"
        "04000000"
        "08000000"
        "e903000000000000"
        "6d795f70726f6a656374"
    )
    assert field_name("driver_hourly_stats", "conv_rate").hex() == "6160e3da"


def test_untyped_feature_is_refused_with_view_and_feature_named() -> None:
    with pytest.raises(UnsupportedTypeError, match=r"'v:m'.*UNKNOWN"):
        check_feature_type("v", "m", ValueType.UNKNOWN)


def test_null_join_key_is_refused() -> None:
    with pytest.raises(InvalidEntityError, match="'k'"):
        encode_entity_keys([pa.array([1, None])], ["k"], [ValueType.INT64], "p")


@SETTINGS
@given(st.lists(INT64, max_size=50))
def test_decimal_and_varint_blocks(values: list[int]) -> None:
    arr = np.array(values, dtype=np.int64)
    assert varints(arr).to_list() == [varint(v) for v in values]
    lengths = np.abs(arr // 7)
    assert decimal(lengths).to_list() == [str(v).encode() for v in lengths.tolist()]


@st.composite
def _side_by_side_blocks(draw: st.DrawFn) -> tuple[list[blocks.Block], list[list[bytes]]]:
    """Blocks of one chunk (constants, full-width and padded ones) and their rows as bytes."""
    n = draw(st.integers(0, 12))
    drawn: list[blocks.Block] = []
    rows: list[list[bytes]] = []
    for kind in draw(st.lists(st.sampled_from(["constant", "fixed", "ragged"]), min_size=1)):
        if kind == "constant":
            raw = draw(st.binary(max_size=6))
            drawn.append(blocks.constant(raw, n))
            rows.append([raw] * n)
        elif kind == "fixed":
            width = draw(st.integers(1, 5))
            raw = draw(st.binary(min_size=n * width, max_size=n * width))
            drawn.append(blocks.fixed(np.frombuffer(raw, dtype=np.uint8), width))
            rows.append([raw[i * width : (i + 1) * width] for i in range(n)])
        else:
            values = draw(st.lists(st.binary(max_size=7), min_size=n, max_size=n))
            drawn.append(blocks.from_list(values))
            rows.append(values)
    if n and draw(st.booleans()):  # rows picked out of order, as a chunk's winners are
        order = np.array(draw(st.permutations(range(n))), dtype=np.int64)
        drawn = [b.take(order) for b in drawn]
        rows = [[column[i] for i in order] for column in rows]
    return drawn, rows


@SETTINGS
@given(_side_by_side_blocks())
def test_rows_buffer_is_every_row_joined_in_order(
    case: tuple[list[blocks.Block], list[list[bytes]]],
) -> None:
    drawn, columns = case
    want = [b"".join(parts) for parts in zip(*columns, strict=True)]
    buffer, ends = blocks.rows_buffer(drawn)
    assert buffer == b"".join(want)
    assert ends.tolist() == np.cumsum([len(r) for r in want], dtype=np.int64).tolist()
    assert blocks.row_list(drawn) == want


@SETTINGS
@given(st.lists(st.integers(-(2**62), 2**62), max_size=50), st.sampled_from([None, 0, 3600]))
def test_resp_hset_buffer_equals_joining_the_framed_columns(
    micros: list[int], key_ttl_seconds: int | None
) -> None:
    n = len(micros)
    keys = [b"key-%d" % i * (i % 3 + 1) for i in range(n)]
    rng = np.random.default_rng(n)
    doubles = pa.array(rng.random(n)).to_pylist()
    if n:
        doubles[0] = None
    texts = pa.array([None if i % 4 == 1 else "é" * (i % 5) for i in range(n)], pa.string())
    columns = [(pa.array(doubles, pa.float64()), ValueType.DOUBLE), (texts, ValueType.STRING)]
    fields = [field_name("v", "a"), field_name("v", "b")]
    ts_name = ts_field("v")
    got = _resp_hset_buffer(
        [blocks.from_list(keys)],
        ts_name,
        np.array(micros, dtype=np.int64),
        [value_parts(a, vt) for a, vt in columns],
        fields,
        key_ttl_seconds,
    )[0]
    # Reference: the per-row Python assembly, one bulk string per argument.
    ts_values = encode_timestamps(np.array(micros, dtype=np.int64))
    encoded = [encode_values(a, vt) for a, vt in columns]
    want = b""
    for j, key in enumerate(keys):
        args = [b"HSET", key, ts_name, ts_values[j]]
        for field, col in zip(fields, encoded, strict=True):
            args += [field, col[j]]
        want += b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)
        if key_ttl_seconds:
            ttl = str(key_ttl_seconds).encode()
            want += b"*3\r\n$6\r\nEXPIRE\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
                len(key),
                key,
                len(ttl),
                ttl,
            )
    assert got == want
