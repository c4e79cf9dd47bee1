"""Feast 0.67 Redis byte layout, encoded a whole Arrow column at a time.

Everything here produces exactly the bytes stock Feast's ``RedisOnlineStore`` writes
(``docs/online-format.md`` describes them); protobuf never appears on the hot path.
Fixed-width values are laid out in a NumPy byte matrix and sliced; varints are built
seven bits at a time for the whole column at once.

Where Feast's own conversion has quirks we reproduce the ones that are deterministic
(so stock Feast reads back what it would have written itself):

- a NaN float is stored as null (``b""``), as Feast's ``pd.isnull`` check does;
- a null scalar timestamp is stored as ``unix_timestamp_val = INT64_MIN`` (NumPy's NaT);
- timestamp lists in nanosecond unit store raw nanoseconds, other units whole seconds
  truncated towards zero; scalar timestamps are floored to seconds;
- null elements inside lists become the element type's default (0, "", False, NaT).

One deliberate difference: an int64 column with nulls keeps its exact values, whereas
Feast routes it through float64 and loses precision above 2**53.
"""

from __future__ import annotations

import struct

import mmh3
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from foundation.errors import InvalidEntityError, UnsupportedTypeError
from online_store import blocks
from online_store.value_types import ValueType, feast_value_type, value_type

INT64_MIN = -(2**63)

# Value proto field tags (field number << 3 | wire type), see feast/types/Value.proto.
VALUE_TAGS: dict[ValueType, bytes] = {
    ValueType.BYTES: b"\x0a",
    ValueType.STRING: b"\x12",
    ValueType.INT32: b"\x18",
    ValueType.INT64: b"\x20",
    ValueType.DOUBLE: b"\x29",
    ValueType.FLOAT: b"\x35",
    ValueType.BOOL: b"\x38",
    ValueType.UNIX_TIMESTAMP: b"\x40",
    ValueType.BYTES_LIST: b"\x5a",
    ValueType.STRING_LIST: b"\x62",
    ValueType.INT32_LIST: b"\x6a",
    ValueType.INT64_LIST: b"\x72",
    ValueType.DOUBLE_LIST: b"\x7a",
    ValueType.FLOAT_LIST: b"\x82\x01",
    ValueType.BOOL_LIST: b"\x8a\x01",
    ValueType.UNIX_TIMESTAMP_LIST: b"\x92\x01",
}
# Types without a fast encoder (Map, Json, Struct, sets, PDF/image bytes, UUID, Decimal,
# nested lists, ...) are converted by Feast's own ``python_values_to_proto_values``, the
# function its materialization uses, so their bytes are Feast's by construction.
# UNKNOWN and NULL are not storable types: Feast cannot convert a column declared so.
UNSUPPORTED_FEATURE_TYPES = frozenset({ValueType.UNKNOWN, ValueType.NULL})
SUPPORTED_FEATURE_TYPES = frozenset(vt for vt in ValueType if vt not in UNSUPPORTED_FEATURE_TYPES)
SUPPORTED_ENTITY_TYPES = frozenset(
    {ValueType.INT64, ValueType.INT32, ValueType.STRING, ValueType.BYTES}
)
# Entity key serialization v3 stores the ValueType enum number of each value.
_ENTITY_TYPE_CODE = {
    ValueType.BYTES: 1,
    ValueType.STRING: 2,
    ValueType.INT32: 3,
    ValueType.INT64: 4,
    ValueType.UNIX_TIMESTAMP: 8,
}
_LIST_ELEMENT_DEFAULT: dict[ValueType, object] = {
    ValueType.STRING_LIST: "",
    ValueType.BYTES_LIST: b"",
    ValueType.INT32_LIST: 0,
    ValueType.INT64_LIST: 0,
    ValueType.FLOAT_LIST: 0.0,
    ValueType.DOUBLE_LIST: 0.0,
    ValueType.BOOL_LIST: False,
    ValueType.UNIX_TIMESTAMP_LIST: INT64_MIN,
}
_UNIT_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def check_feature_type(view: str, feature: str, vt: object) -> None:
    """Refuse a feature type the online codec cannot store (``vt``: Feast's or ours).

    Raises:
        UnsupportedTypeError: the type is not one a Parquet column carries into Redis.
    """
    code = value_type(vt)
    if code not in SUPPORTED_FEATURE_TYPES:
        raise UnsupportedTypeError(
            f"feature '{view}:{feature}' has type {code.name}, which no online store "
            "can hold; give the field a concrete Feast type (e.g. Float64, String, Map, "
            "Json, Struct, Array(...)) in the view's schema",
            feature_view=view,
            feature=feature,
        )


def check_entity_type(view: str, join_key: str, vt: object) -> None:
    """Refuse a join key type Feast's entity key serialization cannot encode.

    Raises:
        UnsupportedTypeError: not INT64, INT32, STRING or BYTES.
    """
    code = value_type(vt)
    if code not in SUPPORTED_ENTITY_TYPES:
        raise UnsupportedTypeError(
            f"join key '{join_key}' of feature view '{view}' has type {code.name}; "
            "entity keys must be Int64, Int32, String or Bytes",
            feature_view=view,
            join_key=join_key,
        )


def field_name(view: str, feature: str) -> bytes:
    """The hash field of one feature: murmur3_32 (seed 0) of ``view:feature``, 4 bytes LE."""
    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


def ts_field(view: str) -> bytes:
    """The hash field holding the view's event timestamp."""
    return f"_ts:{view}".encode()


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a (two's complement 64-bit) integer."""
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_LEN_PREFIX = [varint(n) for n in range(16384)]


def _len_prefix(n: int) -> bytes:
    return _LEN_PREFIX[n] if n < 16384 else varint(n)


def _null_mask(arr: pa.Array) -> npt.NDArray[np.bool_]:
    return np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _ints(arr: pa.Array, dtype: npt.DTypeLike) -> npt.NDArray[np.int64]:
    filled = arr.fill_null(0) if arr.null_count else arr
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=dtype).astype(np.int64)


def timestamp_seconds(arr: pa.Array) -> npt.NDArray[np.int64]:
    """Whole seconds (floored) of a timestamp or integer column; nulls as INT64_MIN."""
    if pa.types.is_timestamp(arr.type):
        per_second = _UNIT_PER_SECOND[arr.type.unit]
        raw = _ints(arr.cast(pa.int64()), np.int64) // per_second
    elif pa.types.is_date(arr.type):
        raw = _ints(arr.cast(pa.timestamp("s")).cast(pa.int64()), np.int64)
    else:
        raw = _ints(arr.cast(pa.int64()), np.int64)
    if arr.null_count:
        raw[_null_mask(arr)] = INT64_MIN
    return raw


def event_micros(arr: pa.Array) -> npt.NDArray[np.int64]:
    """Event times as UTC epoch microseconds (floored, like ``Timestamp.FromDatetime``).

    Raises:
        InvalidEntityError: the column has nulls (Feast cannot store a row without a time).
    """
    if arr.null_count:
        raise InvalidEntityError(
            "event timestamp column has null values; every row needs an event time"
        )
    if not pa.types.is_timestamp(arr.type):
        arr = arr.cast(pa.timestamp("us"))
    per_second = _UNIT_PER_SECOND[arr.type.unit]
    raw = np.asarray(arr.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    if per_second == 1_000_000:
        return raw
    if per_second > 1_000_000:
        return raw // (per_second // 1_000_000)
    return raw * (1_000_000 // per_second)


def timestamp_parts(micros: npt.NDArray[np.int64]) -> list[blocks.Block]:
    """Serialized ``google.protobuf.Timestamp`` per event time (the ``_ts:<view>`` value),
    as its two parts side by side (seconds, nanos).

    proto3 omits zero scalars, so seconds == 0 or nanos == 0 contribute no bytes.
    """
    seconds = micros // 1_000_000
    nanos = (micros % 1_000_000) * 1000
    sec = blocks.blank(blocks.prefixed(b"\x08", blocks.varints(seconds)), seconds == 0)
    nano = blocks.blank(blocks.prefixed(b"\x10", blocks.varints(nanos)), nanos == 0)
    return [sec, nano]


def timestamp_block(micros: npt.NDArray[np.int64]) -> blocks.Block:
    """:func:`timestamp_parts` joined into one block."""
    return blocks.hconcat(timestamp_parts(micros))


def encode_timestamps(micros: npt.NDArray[np.int64]) -> list[bytes]:
    """:func:`timestamp_block` as one bytes object per event time."""
    return timestamp_block(micros).to_list()


def _list_payload(vt: ValueType, items: list[object]) -> bytes:
    if not items:
        return b""
    if vt in (ValueType.STRING_LIST, ValueType.BYTES_LIST):
        parts = [s.encode() if isinstance(s, str) else s for s in items]
        return b"".join(b"\x0a" + _len_prefix(len(p)) + p for p in parts)  # type: ignore[operator, arg-type]
    if vt == ValueType.DOUBLE_LIST:
        packed = struct.pack(f"<{len(items)}d", *items)
    elif vt == ValueType.FLOAT_LIST:
        packed = struct.pack(f"<{len(items)}f", *items)
    elif vt == ValueType.BOOL_LIST:
        packed = bytes(1 if x else 0 for x in items)
    else:
        packed = b"".join(varint(int(x)) for x in items)  # type: ignore[call-overload]
    return b"\x0a" + _len_prefix(len(packed)) + packed


def _list_items(arr: pa.Array, vt: ValueType) -> list[list[object] | None]:
    values_type = arr.type.value_type
    if vt == ValueType.UNIX_TIMESTAMP_LIST and pa.types.is_timestamp(values_type):
        unit = values_type.unit
        flat = arr.flatten()
        ints = flat.cast(pa.int64())
        if unit != "ns":
            # Feast goes through datetime.timestamp() and int(): truncation towards zero.
            per = _UNIT_PER_SECOND[unit]
            ints = pc.divide(ints, per)  # integer division in Arrow truncates towards zero
        # A sliced array's offsets start past 0 while flatten() starts at its first value.
        offsets = pc.subtract(arr.offsets, arr.offsets[0])
        arr = pa.ListArray.from_arrays(offsets, ints, mask=arr.is_null())
    default = _LIST_ELEMENT_DEFAULT[vt]
    rows: list[list[object] | None] = arr.to_pylist()
    for row in rows:
        if row is not None and None in row:
            row[:] = [default if x is None else x for x in row]
    return rows


def feast_encoded(arr: pa.Array, vt: object) -> list[bytes]:
    """Serialized ``feast.types.Value`` per row through Feast's own conversion.

    Used for the value types without a vectorized encoder. Feast's materialization calls
    ``python_values_to_proto_values`` on ``column.to_numpy(zero_copy_only=False)``; we
    hand it the same values, so the bytes are the ones stock Feast writes.

    Raises:
        UnsupportedTypeError: ``vt`` is UNKNOWN/NULL, or Feast cannot convert the column.
    """
    from feast.type_map import python_values_to_proto_values

    vt = value_type(vt)
    if vt in UNSUPPORTED_FEATURE_TYPES:
        raise UnsupportedTypeError(f"value type {vt.name} is not supported by the online codec")
    values = arr.to_numpy(zero_copy_only=False)
    try:
        protos = python_values_to_proto_values(values, feast_value_type(vt))
    except (TypeError, ValueError) as exc:
        raise UnsupportedTypeError(
            f"a column of Arrow type {arr.type} cannot be stored as Feast type {vt.name}: "
            f"{exc}; make the source column match the field's dtype"
        ) from exc
    return [p.SerializeToString() for p in protos]


def value_parts(arr: pa.Array | pa.ChunkedArray, vt: object) -> list[blocks.Block]:
    """Serialized ``feast.types.Value`` for every row of a column (empty for null), as the
    blocks it is made of, side by side (tag, then length and body where there are some).

    The common scalar types are laid out in NumPy for the whole column; lists go through
    :func:`_list_payload`, the other types through Feast's own conversion.

    Args:
        arr: the Arrow column, any type Arrow can cast to the feature's type.
        vt: the feature's value type (Feast's member or :mod:`online_store.value_types`'s).

    Raises:
        UnsupportedTypeError: ``vt`` is not supported.
    """
    vt = value_type(vt)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    tag = VALUE_TAGS.get(vt)
    if tag is None:
        return [blocks.from_list(feast_encoded(arr, vt))]
    if vt in (ValueType.DOUBLE, ValueType.FLOAT):
        np_type = np.float64 if vt == ValueType.DOUBLE else np.float32
        arrow_type = pa.float64() if vt == ValueType.DOUBLE else pa.float32()
        floats = np.asarray(arr.cast(arrow_type).to_numpy(zero_copy_only=False), dtype=np_type)
        raw = np.ascontiguousarray(floats.astype(f"<f{np.dtype(np_type).itemsize}"))
        body = blocks.fixed(raw.view(np.uint8), raw.itemsize)
        return blocks.blank_all([blocks.constant(tag, body.rows), body], np.isnan(floats))
    if vt in (ValueType.INT64, ValueType.INT32):
        target = pa.int64() if vt == ValueType.INT64 else pa.int32()
        cast = arr.cast(target, safe=False) if pa.types.is_floating(arr.type) else arr.cast(target)
        parts = [blocks.constant(tag, len(cast)), blocks.varints(_ints(cast, np.int64))]
        if not arr.null_count and not pa.types.is_floating(arr.type):
            return parts
        nulls = _null_mask(arr)
        if pa.types.is_floating(arr.type):
            nulls |= np.isnan(np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64))
        return blocks.blank_all(parts, nulls)
    if vt == ValueType.UNIX_TIMESTAMP:
        return [blocks.constant(tag, len(arr)), blocks.varints(timestamp_seconds(arr))]
    if vt == ValueType.BOOL:
        bools = arr.cast(pa.bool_())
        raw = _ints(bools.cast(pa.int8()), np.int8).astype(np.uint8)
        parts = [blocks.constant(tag, len(raw)), blocks.fixed(raw, 1)]
        return blocks.blank_all(parts, _null_mask(bools)) if arr.null_count else parts
    if vt in (ValueType.STRING, ValueType.BYTES):
        body = blocks.binary(arr)
        parts = [blocks.constant(tag, body.rows), blocks.varints(body.lens), body]
        return blocks.blank_all(parts, _null_mask(arr)) if arr.null_count else parts
    rows = _list_items(arr, vt)
    return [
        blocks.from_list(
            [
                b"" if row is None else tag + _len_prefix(len(p := _list_payload(vt, row))) + p
                for row in rows
            ]
        )
    ]


def value_block(arr: pa.Array | pa.ChunkedArray, vt: object) -> blocks.Block:
    """:func:`value_parts` joined into one block."""
    parts = value_parts(arr, vt)
    return parts[0] if len(parts) == 1 else blocks.hconcat(parts)


def encode_values(arr: pa.Array | pa.ChunkedArray, vt: object) -> list[bytes]:
    """:func:`value_block` as one bytes object per row (``b""`` for null), byte-identical to
    Feast's ``Value.SerializeToString()``."""
    return value_block(arr, vt).to_list()
