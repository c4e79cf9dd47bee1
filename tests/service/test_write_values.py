"""Values are kept exactly or refused, timestamps of any year read back as RFC 3339, and
hostile shapes (deep nesting, wrong request data types) are 4xx, never 500."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.service.conftest import AppClient, columns
from tests.service.write_helpers import PUSH, assert_refused, driver_df, iso, read_driver

# --- values kept exactly or refused -----------------------------------------------------


@pytest.mark.parametrize(
    ("change", "column", "mention"),
    [
        ({"conv_rate": 1e300}, "conv_rate", "float32"),
        ({"conv_rate": -3.5e38}, "conv_rate", "float32"),
        ({"avg_rating": 10**400}, "avg_rating", "range"),
        ({"avg_daily_trips": 2**63}, "avg_daily_trips", "INT64 range"),
        ({"avg_daily_trips": -(2**63) - 1}, "avg_daily_trips", "INT64 range"),
    ],
)
def test_values_outside_their_type_are_refused(
    client: AppClient, change: dict[str, Any], column: str, mention: str
) -> None:
    df = driver_df([940040], datetime.now(UTC), **change)
    resp = client.post("/push", json={"push_source_name": PUSH, "df": df})
    error = assert_refused(resp, "schema_mismatch", mention)
    assert error["column"] == column
    assert read_driver(client, 940040)["conv_rate"]["statuses"] == ["NOT_FOUND"]


def test_largest_float32_is_kept(client: AppClient) -> None:
    df = driver_df([940041], datetime.now(UTC), conv_rate=3.4028234663852886e38)
    assert client.post("/push", json={"push_source_name": PUSH, "df": df}).status_code == 200
    assert read_driver(client, 940041)["conv_rate"]["values"] == [3.4028234663852886e38]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_floats_are_refused(client: AppClient, token: str) -> None:
    df = driver_df([940042], datetime.now(UTC))
    text = json.dumps({"push_source_name": PUSH, "df": df})
    text = text.replace('"avg_rating": [4.75]', f'"avg_rating": [{token}]')
    resp = client.post("/push", content=text, headers={"content-type": "application/json"})
    assert_refused(resp, "schema_mismatch", "finite")


def test_int32_overflow_is_refused(client: AppClient) -> None:
    df = {
        "driver_id": [940043],
        "customer_id": ["c_int32"],
        "event_timestamp": [iso(datetime.now(UTC))],
        "trips_together": [2**31],
        "avg_tip": [1.0],
        "last_rating": [5],
    }
    resp = client.post(
        "/write-to-online-store", json={"feature_view_name": "driver_customer_stats", "df": df}
    )
    assert_refused(resp, "schema_mismatch", "INT32 range")


def _profile(customer: str, **changes: Any) -> dict[str, list[Any]]:
    df: dict[str, Any] = {
        "customer_id": customer,
        "event_timestamp": iso(datetime.now(UTC) - timedelta(seconds=1)),
        "current_balance": 1.5,
        "lifetime_trip_count": 3,
        "avg_passenger_rating": 4.5,
        "membership_tier": "gold",
        "signup_ts": 1_700_000_000,
        "favourite_zones": ["a", "b"],
    }
    df.update(changes)
    return {k: [v] for k, v in df.items()}


def test_null_inside_a_list_is_refused_not_turned_into_an_empty_string(client: AppClient) -> None:
    df = _profile("c_list_null", favourite_zones=["airport", None])
    resp = client.post(
        "/write-to-online-store", json={"feature_view_name": "customer_profile", "df": df}
    )
    error = assert_refused(resp, "schema_mismatch", "without nulls")
    assert error["column"] == "favourite_zones"


def test_null_list_itself_is_kept_as_null(client: AppClient) -> None:
    df = _profile("c_list_none", favourite_zones=None)
    resp = client.post(
        "/write-to-online-store", json={"feature_view_name": "customer_profile", "df": df}
    )
    assert resp.status_code == 200, resp.text
    read = client.post(
        "/get-online-features",
        json={
            "entities": {"customer_id": ["c_list_none"]},
            "features": ["customer_profile:favourite_zones"],
        },
    )
    assert columns(read.json())["favourite_zones"]["statuses"] == ["NULL_VALUE"]


# --- timestamps outside the usual years -------------------------------------------------


def test_year_one_event_time_reads_back_as_rfc3339_and_newer_rows_replace_it(
    client: AppClient,
) -> None:
    df = _profile("c_year_one", event_timestamp="0001-01-01T00:00:00Z")
    resp = client.post(
        "/write-to-online-store", json={"feature_view_name": "customer_profile", "df": df}
    )
    assert resp.status_code == 200, resp.text
    lookup = {
        "entities": {"customer_id": ["c_year_one"]},
        "features": ["customer_profile:membership_tier"],
    }
    cols = columns(client.post("/get-online-features", json=lookup).json())
    assert cols["membership_tier"]["event_timestamps"] == ["0001-01-01T00:00:00Z"]
    # negative seconds compare exactly in the write script: year 2 is newer than year 1
    newer = _profile("c_year_one", event_timestamp="0002-01-01T00:00:00.000001Z",
                     membership_tier="silver")  # fmt: skip
    resp = client.post(
        "/write-to-online-store", json={"feature_view_name": "customer_profile", "df": newer}
    )
    assert resp.json()["written"] == 1
    cols = columns(client.post("/get-online-features", json=lookup).json())
    assert cols["membership_tier"]["values"] == ["silver"]
    assert cols["membership_tier"]["event_timestamps"] == ["0002-01-01T00:00:00.000001Z"]


def test_timestamp_before_year_one_in_utc_is_refused_on_push(client: AppClient) -> None:
    df = driver_df([940050], "0001-01-01T00:00:00+14:00")
    resp = client.post("/push", json={"push_source_name": PUSH, "df": df})
    assert_refused(resp, "invalid_timestamp", "years 1 and 9999")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/materialize", {"start_ts": "0001-01-01T00:00:00+14:00", "end_ts": "2026-01-01"}),
        ("/materialize", {"start_ts": "2026-01-01", "end_ts": "9999-12-31T23:59:59-14:00"}),
        ("/materialize-incremental", {"end_ts": "0001-01-01T00:00:00+14:00"}),
    ],
)
def test_timestamp_outside_utc_range_is_refused_on_materialize(
    client: AppClient, path: str, body: dict[str, Any]
) -> None:
    resp = client.post(path, json=body)
    assert_refused(resp, "invalid_timestamp", "years 1..9999")


# --- hostile shapes ---------------------------------------------------------------------


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [50, 900, 1000, 5000])
def test_deeply_nested_join_key_is_a_4xx(client: AppClient, depth: int) -> None:
    body = '{"entities": {"driver_id": [' + "[" * depth + "1" + "]" * depth + "]}, "
    body += '"features": ["driver_hourly_stats:conv_rate"]}'
    resp = client.post(
        "/get-online-features", content=body, headers={"content-type": "application/json"}
    )
    assert 400 <= resp.status_code < 500, resp.text
    assert "error" in resp.json()


@pytest.mark.parametrize("depth", [900, 5000])
def test_deeply_nested_pushed_value_is_a_4xx(client: AppClient, depth: int) -> None:
    df = json.dumps(driver_df([940060], datetime.now(UTC)))
    df = df.replace('"conv_rate": [0.25]', '"conv_rate": [' + "[" * depth + "]" * depth + "]")
    body = '{"push_source_name": "' + PUSH + '", "df": ' + df + "}"
    resp = client.post("/push", content=body, headers={"content-type": "application/json"})
    assert 400 <= resp.status_code < 500, resp.text
    assert "error" in resp.json()


def test_deeply_nested_delete_entity_is_a_4xx(client: AppClient) -> None:
    body = '{"entities": {"driver_id": [' + "[" * 900 + "]" * 900 + "]}}"
    resp = client.request(
        "DELETE",
        "/online/driver_hourly_stats",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert 400 <= resp.status_code < 500, resp.text


def test_deeply_nested_training_json_is_a_4xx(client: AppClient) -> None:
    body = "[" * 100_000 + "]" * 100_000
    resp = client.post(
        "/training-dataset", content=body, headers={"content-type": "application/json"}
    )
    assert_refused(resp, "invalid_request", "nested too deeply")


@pytest.mark.parametrize("value", [[1], {"a": 1}, "x", True])
def test_on_demand_request_data_of_the_wrong_type_is_refused(client: AppClient, value: Any) -> None:
    resp = client.post(
        "/get-online-features",
        json={
            "entities": {"driver_id": [1001], "distance_km": [value], "duration_min": [2.0]},
            "features": ["fare_estimate:estimated_fare"],
        },
    )
    error = assert_refused(resp, "invalid_request", "expects DOUBLE")
    assert error["field"] == "distance_km"
