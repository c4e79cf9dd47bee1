"""Decoding of stored ``feast.types.Value`` and ``Timestamp`` bytes without protobuf objects.

Scalars are decoded by hand from their one tag byte; only list values fall back to the
protobuf runtime (they are rare on the read path and their packed encodings vary).
"""

from __future__ import annotations

import base64
import math
import re
import struct
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from google.protobuf.message import DecodeError

from online_store.codec import INT64_MIN

if TYPE_CHECKING:
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNPACK_D = struct.Struct("<d").unpack_from
_UNPACK_F = struct.Struct("<f").unpack_from
_LIST_FIELDS = {
    0x5A: "bytes_list_val",
    0x62: "string_list_val",
    0x6A: "int32_list_val",
    0x72: "int64_list_val",
    0x7A: "double_list_val",
}
_LIST_FIELDS_2 = {
    0x82: "float_list_val",
    0x8A: "bool_list_val",
    0x92: "unix_timestamp_list_val",
}


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode one base-128 varint at ``pos``; returns (unsigned value, next position)."""
    result = 0
    shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= (1 << 63) else value


class UndecodableValueError(ValueError):
    """Stored bytes are not a Value this codec knows (written by something else)."""


def decode_value(raw: bytes) -> object:
    """Python value of a serialized ``feast.types.Value``.

    Args:
        raw: the stored bytes; ``b""`` is Feast's null.

    Returns:
        None for null (and for the NaT timestamp Feast stores for null times); int, float,
        bool, str or bytes for scalars (timestamps as epoch seconds); a list for lists.

    Raises:
        UndecodableValueError: the bytes carry a Value kind we do not support.
    """
    if not raw:
        return None
    tag = raw[0]
    if tag == 0x29:
        return float(_UNPACK_D(raw, 1)[0])
    if tag == 0x35:
        return float(_UNPACK_F(raw, 1)[0])
    if tag in (0x20, 0x18, 0x40):
        value = _signed64(read_varint(raw, 1)[0])
        if tag == 0x40 and value == INT64_MIN:
            return None
        return value
    if tag == 0x12 or tag == 0x0A:
        length, pos = read_varint(raw, 1)
        data = raw[pos : pos + length]
        return data.decode() if tag == 0x12 else data
    if tag == 0x38:
        return raw[1] != 0
    # Feast's generated protobuf module, imported here: it imports all of Feast, which the
    # write path (also on Spark executors) does without.
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    field = _LIST_FIELDS.get(tag) or (_LIST_FIELDS_2.get(tag) if raw[1:2] == b"\x01" else None)
    if field is not None:
        proto = ValueProto.FromString(raw)
        return list(getattr(proto, field).val)
    try:
        proto = ValueProto.FromString(raw)
    except DecodeError as exc:
        message = f"stored value with tag byte 0x{tag:02x} is not a Value"
        raise UndecodableValueError(message) from exc
    return native_value(proto)


def native_value(v: ValueProto) -> Any:
    """JSON-ready value of a ``Value`` the scalar decoder does not handle by hand.

    Mirrors what ``feast serve`` answers (``MessageToDict`` with Feast's ``proto_json``
    patch): maps and structs as objects, map/struct lists as arrays of objects, sets
    and lists as arrays, bytes base64-encoded, non-finite floats as their JSON strings.
    """
    which = v.WhichOneof("val")
    if which is None or which == "null_val":
        return None
    if which in ("double_val", "float_val"):
        return _float_native(getattr(v, which))
    if which == "bytes_val":
        return base64.b64encode(v.bytes_val).decode("ascii")
    if which in ("list_val", "set_val"):
        return [native_value(item) for item in getattr(v, which).val]
    if which in ("map_val", "struct_val"):
        return {k: native_value(item) for k, item in getattr(v, which).val.items()}
    if which in ("map_list_val", "struct_list_val"):
        return [{k: native_value(i) for k, i in m.val.items()} for m in getattr(v, which).val]
    if which in ("bytes_list_val", "bytes_set_val"):
        return [base64.b64encode(b).decode("ascii") for b in getattr(v, which).val]
    if which in ("double_set_val", "float_set_val", "double_list_val", "float_list_val"):
        return [_float_native(f) for f in getattr(v, which).val]
    if which == "scalar_map_val":
        # feast serve answers None here too (its converter does not handle the type).
        return None
    if which == "zoned_timestamp_val":
        zoned = v.zoned_timestamp_val
        if zoned.unix_timestamp == INT64_MIN:
            return None
        return datetime.fromtimestamp(zoned.unix_timestamp, tz=_zone(zoned.zone)).isoformat()
    if "_list_" in which or "_set_" in which:
        return list(getattr(v, which).val)
    return getattr(v, which)


def _zone(name: str) -> tzinfo:
    """The zone a ZonedTimestamp names: IANA key, a fixed offset, or UTC (as Feast reads it)."""
    if not name or name in ("UTC", "GMT"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        match = re.fullmatch(r"(?:UTC|GMT)?([+-])(\d{2}):?(\d{2})", name.strip())
        if match is None:
            return UTC
        sign, hours, minutes = match.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes))
        return timezone(-delta if sign == "-" else delta)


def _float_native(f: float) -> float | str:
    if math.isfinite(f):
        return f
    if math.isnan(f):
        return "NaN"
    return "Infinity" if f > 0 else "-Infinity"


def decode_timestamp(raw: bytes) -> tuple[int, int]:
    """(seconds, nanos) of a serialized ``google.protobuf.Timestamp``."""
    seconds = 0
    nanos = 0
    pos = 0
    end = len(raw)
    while pos < end:
        key = raw[pos]
        value, pos = read_varint(raw, pos + 1)
        if key == 0x08:
            seconds = _signed64(value)
        elif key == 0x10:
            nanos = _signed64(value)
    return seconds, nanos


def timestamp_nanos(raw: bytes) -> int:
    """Total nanoseconds of a serialized Timestamp (the writer's comparison key)."""
    seconds, nanos = decode_timestamp(raw)
    return seconds * 1_000_000_000 + nanos


def timestamp_datetime(raw: bytes) -> datetime:
    """Aware UTC datetime of a serialized Timestamp (microsecond precision)."""
    seconds, nanos = decode_timestamp(raw)
    return EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


# --- Column decoding: one feature for many entities at once ------------------------------
# The read path decodes a column (one feature, every entity of a request). Fixed-width
# scalars of one kind (the common case: a column has one type) are decoded in bulk from
# the concatenated bytes; anything else goes value by value through decode_value.

_BULK_MIN = 8  # below this many values the per-value path is as fast
_DOUBLES = np.dtype([("tag", "u1"), ("value", "<f8")])
_FLOATS = np.dtype([("tag", "u1"), ("value", "<f4")])
_FIXED = {0x29: (9, _DOUBLES), 0x35: (5, _FLOATS)}
_VARINT_TAGS = (0x20, 0x18)  # int64, int32 (unix timestamps keep the per-value path: NaT)


def _small_varints(raws: list[bytes], tag: int) -> list[object]:
    """Values of ``tag``-prefixed varints; one- and two-byte varints (|v| < 16384, v >= 0)
    decoded inline, anything else through :func:`decode_value`."""
    out: list[object] = []
    append = out.append
    for raw in raws:
        if len(raw) == 3 and raw[0] == tag and raw[1] >= 0x80 and raw[2] < 0x80:
            append((raw[1] & 0x7F) | (raw[2] << 7))
        elif len(raw) == 2 and raw[0] == tag and raw[1] < 0x80:
            append(raw[1])
        else:
            append(decode_value(raw))
    return out


def _short_strings(raws: list[bytes]) -> list[object]:
    """Strings under 128 bytes (one length byte) inline, anything else via decode_value."""
    return [
        raw[2:].decode()
        if raw[0] == 0x12 and raw[1] == len(raw) - 2 and len(raw) < 130
        else decode_value(raw)
        for raw in raws
    ]


def decode_column(raws: list[bytes]) -> list[object]:
    """``[decode_value(r) for r in raws]`` for non-empty stored Values, in bulk when regular.

    Args:
        raws: stored Value bytes, none of them empty (nulls are handled by the caller).

    Returns:
        One Python value per entry, exactly as :func:`decode_value` would give.

    Raises:
        UndecodableValueError: as :func:`decode_value`.
    """
    m = len(raws)
    if m >= _BULK_MIN:
        joined = b"".join(raws)
        tag = joined[0]
        fixed = _FIXED.get(tag)
        if fixed is not None:
            width, dtype = fixed
            if joined[::width] == bytes((tag,)) * m and set(map(len, raws)) == {width}:
                # every value has exactly `width` bytes: one tag byte + the IEEE value
                floats: list[object] = np.frombuffer(joined, dtype)["value"].tolist()
                return floats
        elif tag == 0x38:
            if joined[::2] == b"\x38" * m and set(map(len, raws)) == {2}:
                return [b != 0 for b in joined[1::2]]
        elif tag in _VARINT_TAGS:
            return _small_varints(raws, tag)
        elif tag == 0x12:
            return _short_strings(raws)
    return [decode_value(raw) for raw in raws]
