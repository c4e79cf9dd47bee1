"""The lookup's plain-body parse agrees with the pydantic model wherever it answers."""

from __future__ import annotations

import pytest

from service.routes.online import _FIELDS, _parse_simple
from service.schemas import GetOnlineFeaturesRequest

BODIES = [
    b'{"entities": {"driver_id": [1, 2]}, "features": ["v:a", "v:b"]}',
    b'{"entities": {"driver_id": [1]}, "feature_service": "svc", "full_feature_names": true}',
    b'{"entities": {"c": ["x"], "d": [1.5, null, {"k": 1}]}, "features": [],'
    b' "include_feature_view_version_metadata": true, "feature_service": null}',
    b'{"entities": {}, "features": ["v:a"]}',
    b'{"entities": {"a": [1]}, "features": ["v:a"], "entities": {"b": [2]}}',
    b'{"entities": {"a": [18446744073709551615, -9223372036854775808, 1e308]}}',
    # Bodies the plain parse must leave to pydantic (coercions, errors, unknown fields):
    b'{"entities": {"a": [1]}, "features": ["v:a"], "full_feature_names": "true"}',
    b'{"entities": {"a": [1]}, "features": ["v:a"], "full_feature_names": 1}',
    b'{"entities": {"a": [1]}, "features": ["v:a"], "extra": 1}',
    b'{"entities": {"a": [1]}, "features": null}',
    b'{"entities": {"a": 1}, "features": ["v:a"]}',
    b'{"entities": {"a": [1]}, "features": [1]}',
    b'{"entities": {"a": [1]}, "feature_service": 5}',
    b'{"features": ["v:a"]}',
    b'{"entities": {"a": [123456789012345678901234567890]}}',
    b'{"entities": {"a": [NaN]}}',
    b"[]",
    b"not json",
    b"",
]


@pytest.mark.parametrize("body", BODIES)
def test_plain_parse_equals_the_model_or_defers(body: bytes) -> None:
    fast = _parse_simple(body)
    try:
        model = GetOnlineFeaturesRequest.model_validate_json(body)
    except ValueError:
        assert fast is None  # invalid bodies always get pydantic's error
        return
    if fast is None:
        return
    assert {name: getattr(fast, name) for name in _FIELDS} == model.model_dump()
