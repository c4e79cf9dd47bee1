"""Entity keys in Feast's serialization v3 (plus the project suffix), a column at a time.

See ``docs/online-format.md``: count of join keys, the names sorted, then per value its
type code, length and bytes, then the project name.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from foundation.errors import InvalidEntityError
from online_store import blocks
from online_store.codec import _ENTITY_TYPE_CODE, check_entity_type
from online_store.value_types import ValueType, value_type


def entity_key_prefix(join_keys: Sequence[str]) -> bytes:
    """The name part of a v3 entity key (also the SCAN prefix Feast deletes by)."""
    names = sorted(join_keys)
    out = [struct.pack("<I", len(names))]
    for name in names:
        raw = name.encode()
        out.append(struct.pack("<II", 2, len(raw)) + raw)
    return b"".join(out)


def require_present(arr: pa.Array | pa.ChunkedArray, name: str) -> None:
    """Refuse a join key column with nulls.

    Raises:
        InvalidEntityError: ``arr`` has null values.
    """
    if arr.null_count:
        raise InvalidEntityError(
            f"join key column '{name}' has {arr.null_count} null values; entity keys "
            "must be present in every row",
            join_key=name,
        )


# Integer keys: their bytes, and the values they hold (from, up to and not including);
# Feast's protobuf refuses any other (ValueError). The read path checks requests by them too.
KEY_INTS = {ValueType.INT64: ("<i8", -(2**63), 2**63), ValueType.INT32: ("<i4", -(2**31), 2**31)}


def key_values(arr: pa.Array, vt: object, name: str) -> np.ndarray:
    """The values of join key column ``name`` as its key encodes them: little-endian ints
    of the key's width for Int64/Int32 keys (floats cut toward zero, as Feast does), the
    column's own values (str or bytes) otherwise.

    Raises:
        InvalidEntityError: an Int64/Int32 key's value the key cannot hold (out of its
            range, NaN or infinite), which a cast would wrap into another entity's key.
    """
    code = value_type(vt)
    native = np.asarray(arr.to_numpy(zero_copy_only=False))
    if code not in KEY_INTS:
        return native
    fmt, low, high = KEY_INTS[code]
    if len(native) and (native.dtype.kind in "iuf" or pa.types.is_decimal(arr.type)):
        lo, hi = native.min(), native.max()  # NaN when any value is: refused below
        if not (low <= lo and hi < high):
            bad = native[~((native >= low) & (native < high))][0]
            shown = bad.item() if isinstance(bad, np.generic) else bad  # Decimal as itself
            raise InvalidEntityError(
                f"join key column '{name}' holds {shown}, which its {code.name} key cannot "
                f"hold (from {low} to {high - 1}); fix the value, or declare the entity's "
                "value_type wide enough (then `feast apply`)",
                join_key=name,
            )
    try:
        return native.astype(fmt)
    except (ValueError, TypeError) as exc:  # strings that are not integers ("x", "7.5")
        raise InvalidEntityError(
            f"join key column '{name}' holds values its {code.name} key cannot hold ({exc}); "
            "fix the values, or declare the entity's value_type to match them "
            "(then `feast apply`)",
            join_key=name,
        ) from exc


def _entity_parts(arr: pa.Array, vt: ValueType, name: str) -> list[blocks.Block]:
    """Key parts of one join key column (``vt`` already this package's member)."""
    require_present(arr, name)
    code = _ENTITY_TYPE_CODE[vt]
    if vt in (ValueType.INT64, ValueType.INT32):
        ints = key_values(arr, vt, name)
        width = ints.dtype.itemsize
        head = blocks.constant(struct.pack("<II", code, width), len(arr))
        return [head, blocks.fixed(np.ascontiguousarray(ints).view(np.uint8), width)]
    body = blocks.binary(arr)
    length = np.ascontiguousarray(body.lens.astype("<u4")).view(np.uint8)
    return [blocks.constant(struct.pack("<I", code), len(arr)), blocks.fixed(length, 4), body]


def key_parts(
    columns: Sequence[pa.Array | pa.ChunkedArray],
    join_keys: Sequence[str],
    types: Sequence[object],
    project: str,
    *,
    num_rows: int = 0,
) -> list[blocks.Block]:
    """Redis keys (entity key serialization v3 + project name) for every row, as blocks
    side by side (see :mod:`online_store.blocks`).

    Args:
        columns: one Arrow column per join key, in the order of ``join_keys``.
        join_keys: join key names (any order; Feast sorts them by name).
        types: value type per join key (Feast's members or :mod:`online_store.value_types`'s).
        project: the Feast project, appended to every key.
        num_rows: row count, used only when there are no join keys (entity-less view;
            Feast's writer serializes an empty entity key for every row).

    Raises:
        InvalidEntityError: a join key column has nulls.
        UnsupportedTypeError: a join key type is not supported.
    """
    n = len(columns[0]) if columns else num_rows
    parts = [blocks.constant(entity_key_prefix(join_keys), n)]
    for i in sorted(range(len(join_keys)), key=lambda i: join_keys[i]):
        check_entity_type("?", join_keys[i], types[i])
        col = columns[i]
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        parts += _entity_parts(col, value_type(types[i]), join_keys[i])
    parts.append(blocks.constant(project.encode(), n))
    return parts


def encode_entity_keys(
    columns: Sequence[pa.Array | pa.ChunkedArray],
    join_keys: Sequence[str],
    types: Sequence[object],
    project: str,
    *,
    num_rows: int = 0,
) -> list[bytes]:
    """:func:`key_parts` as one bytes object per row.

    Raises:
        InvalidEntityError: a join key column has nulls.
        UnsupportedTypeError: a join key type is not supported.
    """
    return blocks.row_list(key_parts(columns, join_keys, types, project, num_rows=num_rows))


def entity_key_from_values(
    values: Sequence[object], join_keys: Sequence[str], types: Sequence[object], project: str
) -> bytes:
    """One Redis key from Python values (already validated), for the read path."""
    codes = [value_type(vt) for vt in types]
    pairs = sorted(zip(join_keys, values, codes, strict=True), key=lambda p: p[0])
    out = [entity_key_prefix(join_keys)]
    for _, value, vt in pairs:
        if vt == ValueType.INT64:
            out.append(struct.pack("<IIq", 4, 8, value))
        elif vt == ValueType.INT32:
            out.append(struct.pack("<IIi", 3, 4, value))
        else:
            raw = value.encode() if isinstance(value, str) else value
            assert isinstance(raw, bytes)
            out.append(struct.pack("<II", _ENTITY_TYPE_CODE[vt], len(raw)) + raw)
    out.append(project.encode())
    return b"".join(out)


def glob_escape(raw: bytes) -> bytes:
    """``raw`` with Redis ``SCAN MATCH`` wildcards escaped, to match it literally."""
    out = bytearray()
    for b in raw:
        if b in b"*?[]\\":
            out.append(0x5C)
        out.append(b)
    return bytes(out)


_PACK_Q = struct.Struct("<q").pack


_PACK_I = struct.Struct("<i").pack


_PACK_II = struct.Struct("<II").pack


_INT64_HEAD = _PACK_II(4, 8)


_INT32_HEAD = _PACK_II(3, 4)


def _int64_part(value: int) -> bytes:
    return _INT64_HEAD + _PACK_Q(value)


def _int32_part(value: int) -> bytes:
    return _INT32_HEAD + _PACK_I(value)


def _string_part(value: str) -> bytes:
    raw = value.encode()
    return _PACK_II(2, len(raw)) + raw


# One value's part of an entity key (type tag, length, little-endian value), by type: the
# read path builds keys from these without protobuf (look up with ``value_type(vt)``).
KEY_PART_ENCODERS: dict[ValueType, Callable[[Any], bytes]] = {
    ValueType.INT64: _int64_part,
    ValueType.INT32: _int32_part,
    ValueType.STRING: _string_part,
}
