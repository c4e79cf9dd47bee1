"""Bad input: a 4xx JSON error naming the problem and the fix, never a 500."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest

from tests.service.conftest import AppClient

F = ["driver_hourly_stats:conv_rate"]
OK_ENTITIES = {"driver_id": [1001]}

ONLINE_CASES: list[tuple[str, dict[str, Any], int, str, list[str]]] = [
    (
        "unknown view",
        {"entities": OK_ENTITIES, "features": ["driver_stats:conv_rate"]},
        404,
        "feature_view_not_found",
        ["'driver_stats'", "known views"],
    ),
    (
        "unknown feature",
        {"entities": OK_ENTITIES, "features": ["driver_hourly_stats:speed"]},
        404,
        "feature_not_found",
        ["'speed'", "conv_rate"],
    ),
    (
        "unknown feature service",
        {"entities": OK_ENTITIES, "feature_service": "nope"},
        404,
        "feature_service_not_found",
        ["'nope'", "ride_ranking_v1"],
    ),
    (
        "malformed ref",
        {"entities": OK_ENTITIES, "features": ["conv_rate"]},
        422,
        "invalid_request",
        ["'conv_rate'", "<feature_view>:<feature>"],
    ),
    (
        "non-decimal string for int64 key",
        {"entities": {"driver_id": ["1_001"]}, "features": F},
        422,
        "invalid_entity",
        ["driver_id", "integer", "decimal string"],
    ),
    (
        "fractional float for int64 key",
        {"entities": {"driver_id": [1001.5]}, "features": F},
        422,
        "invalid_entity",
        ["driver_id", "1001.5", "exact integer"],
    ),
    (
        "entity by name and by join key",
        {"entities": {"driver": [1001], "driver_id": [1001]}, "features": F},
        422,
        "invalid_entity",
        ["'driver'", "'driver_id'", "once"],
    ),
    (
        "int for string key",
        {"entities": {"customer_id": [7]}, "features": ["customer_profile:membership_tier"]},
        422,
        "invalid_entity",
        ["customer_id", "string"],
    ),
    (
        "missing join key",
        {"entities": {"customer_id": ["c_1"]}, "features": F},
        422,
        "invalid_entity",
        ["driver_id", "missing"],
    ),
    (
        "ragged entity lists",
        {
            "entities": {"driver_id": [1, 2], "customer_id": ["a"]},
            "features": ["driver_customer_stats:avg_tip"],
        },
        422,
        "invalid_entity",
        ["lengths"],
    ),
    (
        "too many entities",
        {"entities": {"driver_id": list(range(501))}, "features": F},
        413,
        "request_too_large",
        ["501", "limit is 500"],
    ),
    (
        "missing request data for on-demand view",
        {"entities": {"driver_id": [1]}, "features": ["fare_estimate:estimated_fare"]},
        422,
        "invalid_entity",
        ["distance_km", "duration_min"],
    ),
    ("no features", {"entities": OK_ENTITIES}, 422, "invalid_request", ["no features"]),
    (
        "colliding names",
        {
            "entities": {"driver_id": [1], "customer_id": ["c"]},
            "features": ["driver_hourly_stats:avg_rating", "driver_hourly_stats:avg_rating"],
        },
        422,
        "invalid_request",
        ["collide", "full_feature_names"],
    ),
    (
        "entities not an object",
        {"entities": [1, 2], "features": F},
        422,
        "validation_error",
        ["entities"],
    ),
    (
        "wrong request data type",
        {
            "entities": {"driver_id": [1], "distance_km": ["far"], "duration_min": [3.0]},
            "features": ["fare_estimate:estimated_fare"],
        },
        422,
        "invalid_request",
        ["fare_estimate", "distance_km"],
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "error_type", "mentions"),
    [case[1:] for case in ONLINE_CASES],
    ids=[case[0] for case in ONLINE_CASES],
)
def test_bad_online_request_is_a_json_4xx(
    client: AppClient, body: dict[str, Any], status: int, error_type: str, mentions: list[str]
) -> None:
    resp = client.post("/get-online-features", json=body)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["type"] == error_type
    for word in mentions:
        assert word in error["message"], (word, error["message"])


@pytest.mark.parametrize(
    ("content", "mention"),
    [(b"{not json", "Invalid JSON"), (b"", "Invalid JSON"), (b"[]", "should be an object")],
)
def test_malformed_json_is_422_not_double_encoded(
    client: AppClient, content: bytes, mention: str
) -> None:
    resp = client.post(
        "/get-online-features", content=content, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 422
    body = resp.json()
    assert isinstance(body, dict)  # Feast answers with a JSON string holding JSON
    assert body["error"]["type"] == "validation_error"
    assert mention in body["error"]["message"]


def test_body_over_the_limit_is_413(app_factory: Any) -> None:
    small = app_factory(max_body_bytes=2048)
    resp = small.post(
        "/get-online-features",
        json={"entities": {"driver_id": list(range(1000))}, "features": F},
    )
    assert resp.status_code == 413
    assert resp.json()["error"]["type"] == "request_too_large"


def test_too_many_features_is_413(app_factory: Any) -> None:
    small = app_factory(max_features_per_request=2)
    resp = small.post(
        "/get-online-features",
        json={"entities": OK_ENTITIES, "features": [*F, *F, *F]},
    )
    assert resp.status_code == 413
    assert "FEATURESTORE_MAX_FEATURES_PER_REQUEST" in resp.json()["error"]["message"]


def test_unknown_route_and_method_are_json(client: AppClient) -> None:
    resp = client.get("/nope")
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "not_found"
    resp = client.get("/get-online-features")
    assert resp.status_code == 405
    assert resp.json()["error"]["type"] == "method_not_allowed"


def test_unexpected_failure_is_a_generic_500_without_internals(client: AppClient) -> None:
    with mock.patch(
        "service.routes.online.compile_plan", side_effect=RuntimeError("secret detail")
    ):
        resp = client.post(
            "/get-online-features",
            json={"entities": OK_ENTITIES, "features": ["customer_profile:current_balance"]},
        )
    assert resp.status_code == 500
    assert resp.json() == {
        "error": {"type": "internal_error", "message": "internal server error; see the server log"}
    }


def test_redis_outage_is_503_naming_redis(app_factory: Any, redis_server_factory: Any) -> None:
    server = redis_server_factory(persistent=False)
    app = app_factory(redis_url=server.url, redis_timeout_seconds=0.5)
    server.kill()
    resp = app.post("/get-online-features", json={"entities": OK_ENTITIES, "features": F})
    assert resp.status_code == 503
    error = resp.json()["error"]
    assert error["type"] == "backend_unavailable"
    assert error["backend"] == "redis"


@pytest.mark.parametrize("service", [True, False], ids=["feature service", "features"])
def test_training_set_without_on_demand_request_data_is_422(
    client: AppClient, service: bool
) -> None:
    selection: dict[str, Any] = (
        {"feature_service": "ride_ranking_v1"}
        if service
        else {"features": ["fare_estimate:estimated_fare"]}
    )
    resp = client.post(
        "/training-dataset",
        json={
            "entity_sql": "SELECT 1001 AS driver_id, 'c_1' AS customer_id, "
            "TIMESTAMP '2026-01-01' AS event_timestamp",
            **selection,
        },
    )
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_entity"
    assert error["missing"] == ["distance_km", "duration_min"]
    assert "fare_estimate" in error["message"]
