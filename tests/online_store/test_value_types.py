"""The write path's value types are Feast's: same members, same protobuf numbers."""

from __future__ import annotations

import pyarrow as pa
import pytest
from feast.value_type import ValueType as FeastValueType

from online_store.codec import encode_values
from online_store.keys import encode_entity_keys
from online_store.value_types import ValueType, feast_value_type, value_type


def test_the_mirror_has_feasts_members_and_numbers() -> None:
    assert {m.name: m.value for m in ValueType} == {m.name: m.value for m in FeastValueType}


@pytest.mark.parametrize("member", list(FeastValueType), ids=lambda m: m.name)
def test_feast_members_map_both_ways(member: FeastValueType) -> None:
    ours = value_type(member)
    assert ours.name == member.name
    assert value_type(int(ours)) is ours
    assert feast_value_type(ours) is member


def test_anything_else_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Feast value type"):
        value_type("INT64")
    with pytest.raises(ValueError, match="99 is not a valid ValueType"):
        value_type(99)


def test_codec_and_keys_give_the_same_bytes_for_either_enum() -> None:
    column = pa.array([1.5, None, float("nan"), -2.0])
    assert encode_values(column, FeastValueType.DOUBLE) == encode_values(column, ValueType.DOUBLE)
    ids = [pa.array(["a", "bc"]), pa.array([3, 4], pa.int32())]
    assert encode_entity_keys(
        ids, ["s", "z"], [FeastValueType.STRING, FeastValueType.INT32], "p"
    ) == encode_entity_keys(ids, ["s", "z"], [ValueType.STRING, ValueType.INT32], "p")
