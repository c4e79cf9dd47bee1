"""JSON encoding of looked-up values, the way Feast's HTTP server renders them.

Kept apart from the lookup logic: these are pure functions over Python values
(timestamps, floats, bytes) chosen once per response column when a plan compiles.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any

from feast.value_type import ValueType

EPOCH = "1970-01-01T00:00:00Z"
_INF = (math.inf, -math.inf)

Encoder = Callable[[list[Any]], list[Any]]


@lru_cache(maxsize=65536)
def format_timestamp(ts: datetime) -> str:
    """RFC 3339 with ``Z``, with the adaptive precision Feast's JSON uses.

    Args:
        ts: an aware UTC datetime.

    Returns:
        e.g. ``2026-11-26T09:00:00Z``, ``...:00.250Z`` or ``...:00.250001Z``.
    """
    # strftime("%Y") does not pad years below 1000 ("1-01-01"), which is not RFC 3339.
    base = (
        f"{ts.year:04d}-{ts.month:02d}-{ts.day:02d}T{ts.hour:02d}:{ts.minute:02d}:{ts.second:02d}"
    )
    micros = ts.microsecond
    if micros == 0:
        return base + "Z"
    if micros % 1000 == 0:
        return f"{base}.{micros // 1000:03d}Z"
    return f"{base}.{micros:06d}Z"


def _float_json(v: Any) -> Any:
    # JSON has no NaN/Infinity; Feast answers with protobuf-JSON strings for them.
    if v is None or (v == v and v not in _INF):
        return v
    if v != v:
        return "NaN"
    return "Infinity" if v > 0 else "-Infinity"


def encode_floats(values: list[Any]) -> list[Any]:
    # Fast check first: a sum of finite floats is finite (unless it overflows, which
    # only sends us to the exact per-value check below).
    try:
        if math.isfinite(sum(values)):
            return values
    except TypeError:  # None among them
        pass
    for v in values:
        if v is not None and (v != v or v in _INF):
            return [_float_json(x) for x in values]
    return values


def _encode_float_lists(values: list[Any]) -> list[Any]:
    return [None if v is None else encode_floats(v) for v in values]


def _b64(v: bytes) -> str:
    return base64.b64encode(v).decode("ascii")


def _encode_bytes(values: list[Any]) -> list[Any]:
    return [None if v is None else _b64(v) for v in values]


def _encode_bytes_lists(values: list[Any]) -> list[Any]:
    return [None if v is None else [_b64(x) for x in v] for v in values]


def _stored_json(v: Any) -> Any:
    if isinstance(v, bytes):
        return _b64(v)
    if isinstance(v, float):
        return _float_json(v)
    if isinstance(v, list):
        return [_stored_json(x) for x in v]
    return v


def json_default(v: Any) -> Any:
    """``orjson``'s fallback: bytes stored under a view that now declares another type."""
    if isinstance(v, bytes):
        return _b64(v)
    raise TypeError(f"{type(v).__name__} is not JSON serializable")


def _as_stored(encoder: Encoder) -> Encoder:
    """``encoder``, or, for values that are not of the declared type (the view's type
    changed after they were written), each value rendered by its stored type as Feast
    renders it."""

    def encode(values: list[Any]) -> list[Any]:
        try:
            return encoder(values)
        except (TypeError, AttributeError):
            return [_stored_json(v) for v in values]

    return encode


ENCODERS: dict[ValueType, Encoder] = {
    ValueType.FLOAT: _as_stored(encode_floats),
    ValueType.DOUBLE: _as_stored(encode_floats),
    ValueType.FLOAT_LIST: _as_stored(_encode_float_lists),
    ValueType.DOUBLE_LIST: _as_stored(_encode_float_lists),
    ValueType.BYTES: _as_stored(_encode_bytes),
    ValueType.PDF_BYTES: _as_stored(_encode_bytes),
    ValueType.IMAGE_BYTES: _as_stored(_encode_bytes),
    ValueType.BYTES_LIST: _as_stored(_encode_bytes_lists),
}
