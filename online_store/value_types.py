"""Feast's value types by their wire numbers, importable without importing Feast.

The codec and the entity keys dispatch on a feature's value type. Feast's own enum
(``feast.value_type.ValueType``) lives in a package whose import takes seconds and a few
hundred MB (``feast/__init__`` loads the whole SDK), which every Spark Python worker that
writes a partition to Redis would pay. The numbers are fixed by Feast's protobuf
(``feast/types/Value.proto``, ``ValueType.Enum``; entity key serialization v3 even stores
them), so the write path works on this mirror: same names, same numbers, and
:func:`value_type` maps Feast's members (or plain numbers) onto it.
``tests/online_store/test_value_types.py`` checks the mirror against Feast's enum.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from feast.value_type import ValueType as FeastValueType


class ValueType(enum.IntEnum):
    """The members of Feast's ``ValueType`` with their protobuf numbers."""

    UNKNOWN = 0
    BYTES = 1
    STRING = 2
    INT32 = 3
    INT64 = 4
    DOUBLE = 5
    FLOAT = 6
    BOOL = 7
    UNIX_TIMESTAMP = 8
    BYTES_LIST = 11
    STRING_LIST = 12
    INT32_LIST = 13
    INT64_LIST = 14
    DOUBLE_LIST = 15
    FLOAT_LIST = 16
    BOOL_LIST = 17
    UNIX_TIMESTAMP_LIST = 18
    NULL = 19
    MAP = 20
    MAP_LIST = 21
    BYTES_SET = 22
    STRING_SET = 23
    INT32_SET = 24
    INT64_SET = 25
    DOUBLE_SET = 26
    FLOAT_SET = 27
    BOOL_SET = 28
    UNIX_TIMESTAMP_SET = 29
    PDF_BYTES = 30
    IMAGE_BYTES = 31
    JSON = 32
    JSON_LIST = 33
    STRUCT = 34
    STRUCT_LIST = 35
    UUID = 36
    TIME_UUID = 37
    UUID_LIST = 38
    TIME_UUID_LIST = 39
    UUID_SET = 40
    TIME_UUID_SET = 41
    VALUE_LIST = 42
    VALUE_SET = 43
    DECIMAL = 44
    DECIMAL_LIST = 45
    DECIMAL_SET = 46
    SCALAR_MAP = 47
    ZONED_TIMESTAMP = 48


def value_type(vt: object) -> ValueType:
    """This module's member for Feast's ``ValueType`` member ``vt`` (or its number).

    Raises:
        ValueError: ``vt`` names no value type.
    """
    if isinstance(vt, ValueType):
        return vt
    if isinstance(vt, enum.Enum):
        return ValueType(vt.value)
    if isinstance(vt, int):
        return ValueType(vt)
    raise ValueError(f"{vt!r} is not a Feast value type")


def feast_value_type(vt: ValueType) -> FeastValueType:
    """Feast's own member for ``vt`` (imports Feast: for the paths that call into it)."""
    from feast.value_type import ValueType as FeastValueType

    return FeastValueType(int(vt))
