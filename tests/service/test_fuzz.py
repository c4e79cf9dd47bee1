"""Property: no request body, however wrong, gets a 5xx or a non-JSON error."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.service.conftest import AppClient

JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
JSON = st.recursive(
    JSON_LEAF,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
NAMES = st.sampled_from(
    ["driver_id", "customer_id", "distance_km", "duration_min", "event_timestamp", "created",
     "conv_rate", "avg_daily_trips", "favourite_zones", "signup_ts", "nope"]
)  # fmt: skip
REFS = st.sampled_from(
    ["driver_hourly_stats:conv_rate", "customer_profile:signup_ts", "fare_estimate:estimated_fare",
     "driver_customer_stats:avg_tip", "customer_profile:favourite_zones", "x:y", "bad", ""]
)  # fmt: skip
COLUMNS = st.dictionaries(
    NAMES, st.lists(JSON_LEAF | st.lists(JSON_LEAF, max_size=2), max_size=3), max_size=5
)

ONLINE_BODIES = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {"entities": COLUMNS, "features": st.lists(REFS, max_size=4)},
        optional={
            "full_feature_names": JSON_LEAF,
            "feature_service": st.sampled_from(["ride_ranking_v1", "x"]),
        },
    ),
)
PUSH_BODIES = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {"push_source_name": st.sampled_from(["driver_stats_push", "nope"]), "df": COLUMNS},
        optional={"to": st.sampled_from(["online", "offline", "online_and_offline", "x"])},
    ),
    st.fixed_dictionaries(
        {
            "feature_view_name": st.sampled_from(["customer_profile", "driver_hourly_stats"]),
            "df": COLUMNS,
        }
    ),
)


def _check(resp: Any) -> None:
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        assert set(resp.json()["error"]) >= {"type", "message"}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=ONLINE_BODIES)
def test_any_lookup_body_is_answered_without_5xx(client: AppClient, body: Any) -> None:
    _check(client.post("/get-online-features", json=body))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=PUSH_BODIES)
def test_any_write_body_is_answered_without_5xx(client: AppClient, body: Any) -> None:
    # Only ids the generator never writes, so other tests' reference data stays intact.
    if isinstance(body, dict) and isinstance(body.get("df"), dict) and "driver_id" in body["df"]:
        body["df"]["driver_id"] = [950_000 + i for i in range(len(body["df"]["driver_id"]))]
    if isinstance(body, dict) and isinstance(body.get("df"), dict) and "customer_id" in body["df"]:
        body["df"]["customer_id"] = [f"fuzz_{i}" for i in range(len(body["df"]["customer_id"]))]
    path = (
        "/write-to-online-store"
        if isinstance(body, dict) and "feature_view_name" in body
        else "/push"
    )
    _check(client.post(path, json=body))


def test_nan_and_infinity_tokens_as_join_keys_are_422(client: AppClient) -> None:
    for token in (b"NaN", b"Infinity", b"-Infinity"):
        resp = client.post(
            "/get-online-features",
            content=b'{"entities": {"driver_id": ['
            + token
            + b']}, "features": ["driver_hourly_stats:conv_rate"]}',
            headers={"content-type": "application/json"},
        )
        assert resp.status_code == 422
        assert resp.json()["error"]["type"] == "invalid_entity"


def test_out_of_range_epoch_timestamps_in_writes_are_422(client: AppClient) -> None:
    for token in (b"NaN", b"Infinity", b"1e300", b"-99999999999999"):
        body = (
            b'{"feature_view_name": "customer_profile", "df": {"customer_id": ["fuzz_ts"], '
            b'"event_timestamp": [' + token + b'], "current_balance": [1.0], '
            b'"lifetime_trip_count": [1], "avg_passenger_rating": [1.0], '
            b'"membership_tier": ["x"], "signup_ts": [0], "favourite_zones": [[]]}}'
        )
        resp = client.post(
            "/write-to-online-store", content=body, headers={"content-type": "application/json"}
        )
        assert resp.status_code == 422, (token, resp.text)
        assert resp.json()["error"]["type"] == "invalid_timestamp"
