"""What was accepted is kept, what is newest wins: the clock rule, exact values, honest
write answers, the pinned-key repair, and caller input that never reaches a 500."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from offline_store.sources import source_files
from online_store.writer import write_arrow
from service.metrics import Metrics
from tests.service.conftest import AppClient, Repo, columns

PUSH = "driver_stats_push"
DRIVER_FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips", "avg_rating", "surge_multiplier",
                   "is_active"]  # fmt: skip


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _driver_df(ids: list[int], when: datetime | str, **changes: Any) -> dict[str, list[Any]]:
    stamp = when if isinstance(when, str) else _iso(when)
    n = len(ids)
    df: dict[str, list[Any]] = {
        "driver_id": ids,
        "event_timestamp": [stamp] * n,
        "conv_rate": [0.25] * n,
        "acc_rate": [0.5] * n,
        "avg_daily_trips": [7] * n,
        "avg_rating": [4.75] * n,
        "surge_multiplier": [1.5] * n,
        "is_active": [True] * n,
    }
    df.update({k: [v] * n for k, v in changes.items()})
    return df


def _read_driver(client: AppClient, driver_id: int) -> dict[str, dict[str, list[Any]]]:
    resp = client.post(
        "/get-online-features",
        json={
            "entities": {"driver_id": [driver_id]},
            "features": [f"driver_hourly_stats:{f}" for f in DRIVER_FEATURES],
        },
    )
    assert resp.status_code == 200, resp.text
    return columns(resp.json())


def _offline_rows(repo: Repo, driver_id: int) -> int:
    table = pq.read_table(source_files(str(repo.path / "data" / "driver_stats.parquet")))
    return int(pc.sum(pc.equal(table.column("driver_id"), driver_id)).as_py() or 0)


def _assert_refused(resp: Any, error_type: str, *mentions: str) -> dict[str, Any]:
    assert resp.status_code == 422, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["type"] == error_type
    for mention in mentions:
        assert mention in error["message"], error
    return error


# --- the clock rule ---------------------------------------------------------------------


@pytest.mark.parametrize("to", ["online", "offline", "online_and_offline"])
def test_push_far_in_the_future_is_refused_naming_the_limit(
    client: AppClient, repo: Repo, to: str
) -> None:
    driver = {"online": 940001, "offline": 940002, "online_and_offline": 940003}[to]
    df = _driver_df([driver], "9999-12-31T23:59:59Z")
    resp = client.post("/push", json={"push_source_name": PUSH, "df": df, "to": to})
    error = _assert_refused(resp, "invalid_timestamp", "FEATURESTORE_MAX_FUTURE_SKEW_SECONDS")
    assert error["column"] == "event_timestamp"
    assert datetime.fromisoformat(error["limit"]) < datetime.now(UTC) + timedelta(minutes=6)
    assert _read_driver(client, driver)["conv_rate"]["statuses"] == ["NOT_FOUND"]
    assert _offline_rows(repo, driver) == 0


def test_write_to_online_store_in_the_future_is_refused(client: AppClient) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    resp = client.post(
        "/write-to-online-store",
        json={"feature_view_name": "driver_hourly_stats", "df": _driver_df([940004], soon)},
    )
    _assert_refused(resp, "invalid_timestamp", "300 s ahead")
    assert _read_driver(client, 940004)["conv_rate"]["statuses"] == ["NOT_FOUND"]


def test_event_time_within_the_allowed_skew_is_accepted(client: AppClient) -> None:
    soon = (datetime.now(UTC) + timedelta(minutes=2)).replace(microsecond=0)
    resp = client.post("/push", json={"push_source_name": PUSH, "df": _driver_df([940005], soon)})
    assert resp.status_code == 200, resp.text
    assert _read_driver(client, 940005)["conv_rate"]["statuses"] == ["PRESENT"]


def test_future_created_timestamp_is_refused_too(client: AppClient) -> None:
    df = _driver_df([940006], datetime.now(UTC), created="9999-01-01T00:00:00Z")
    resp = client.post("/push", json={"push_source_name": PUSH, "df": df, "to": "offline"})
    error = _assert_refused(resp, "invalid_timestamp")
    assert error["column"] == "created"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/materialize", {"start_ts": "2026-01-01T00:00:00Z", "end_ts": "9999-12-31T00:00:00Z"}),
        ("/materialize-incremental", {"end_ts": "9999-12-31T00:00:00Z"}),
    ],
)
def test_materialize_window_ending_in_the_future_is_refused(
    client: AppClient, path: str, body: dict[str, Any]
) -> None:
    resp = client.post(path, json={**body, "feature_views": ["driver_hourly_stats"]})
    error = _assert_refused(resp, "invalid_timestamp", "end_ts", "ahead of the server clock")
    assert error["field"] == "end_ts"


def test_skew_limit_is_a_setting(app_factory: Any) -> None:
    strict = app_factory(max_future_skew_seconds=0)
    soon = datetime.now(UTC) + timedelta(seconds=30)
    resp = strict.post("/push", json={"push_source_name": PUSH, "df": _driver_df([940007], soon)})
    _assert_refused(resp, "invalid_timestamp", "0 s ahead")


# --- write answers ----------------------------------------------------------------------


def test_write_answer_counts_written_and_skipped_older_rows(client: AppClient) -> None:
    now = datetime.now(UTC)
    first = client.post(
        "/push", json={"push_source_name": PUSH, "df": _driver_df([940010, 940011], now)}
    )
    assert first.json()["written"] == 2
    # 940010 older than stored (skipped), 940012 new (written), 940011 twice in one
    # request: the newer of the two wins, the other is skipped.
    df = _driver_df([940010, 940012, 940011, 940011], now - timedelta(hours=1))
    df["event_timestamp"][3] = _iso(now + timedelta(seconds=1))
    resp = client.post("/push", json={"push_source_name": PUSH, "df": df, "to": "online"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["rows"], body["written"], body["skipped_older"]) == (4, 2, 2)
    assert body["offline_written"] == 0


def test_an_offline_and_online_push_reports_both_sides(client: AppClient) -> None:
    when = datetime.now(UTC) - timedelta(minutes=1)
    df = _driver_df([940013], when)
    resp = client.post(
        "/push", json={"push_source_name": PUSH, "df": df, "to": "online_and_offline"}
    )
    assert resp.json()["written"] == 1
    assert resp.json()["offline_written"] == 1
    again = client.post(
        "/push", json={"push_source_name": PUSH, "df": df, "to": "online_and_offline"}
    )
    # equal event time: skipped online (Feast's rule), appended offline
    body = again.json()
    assert (body["written"], body["skipped_older"], body["offline_written"]) == (0, 1, 1)


def test_freshness_clamps_an_event_time_ahead_of_the_clock() -> None:
    metrics = Metrics()
    metrics.note_pushed("v", datetime(9999, 12, 31, tzinfo=UTC))
    assert metrics.pushed_event_times["v"] <= datetime.now(UTC)
    later = datetime.now(UTC) + timedelta(seconds=1)
    metrics.note_pushed("v", later)  # a later real write still moves it
    assert metrics.pushed_event_times["v"] > datetime.now(UTC) - timedelta(seconds=1)


# --- the pinned-key repair --------------------------------------------------------------


def _pin(client: AppClient, driver: int) -> None:
    """A row stamped in 9999, as a writer without the clock rule (SDK, old server) left it."""
    view = client.state.store.get_feature_view("driver_hourly_stats")
    table = pa.table(
        {
            "driver_id": pa.array([driver], pa.int64()),
            "event_timestamp": pa.array([datetime(9999, 12, 31, tzinfo=UTC)], pa.timestamp("us")),
            "conv_rate": pa.array([0.99], pa.float32()),
            "acc_rate": pa.array([0.99], pa.float32()),
            "avg_daily_trips": pa.array([999], pa.int64()),
            "avg_rating": pa.array([1.0], pa.float64()),
            "surge_multiplier": pa.array([9.0], pa.float64()),
            "is_active": pa.array([False], pa.bool_()),
        }
    )
    write_arrow(client.state.redis_sync, view, table, project="rides")


def test_admin_delete_of_a_pinned_key_lets_the_next_write_land(client: AppClient) -> None:
    driver = 940020
    _pin(client, driver)
    now = datetime.now(UTC) - timedelta(seconds=5)
    blocked = client.post(
        "/push", json={"push_source_name": PUSH, "df": _driver_df([driver], now, avg_daily_trips=3)}
    )
    assert (blocked.json()["written"], blocked.json()["skipped_older"]) == (0, 1)
    assert _read_driver(client, driver)["avg_daily_trips"]["values"] == [999]

    resp = client.request(
        "DELETE", "/online/driver_hourly_stats", json={"entities": {"driver_id": [driver, 940021]}}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"status": "ok", "feature_view": "driver_hourly_stats", "deleted": 1}
    assert _read_driver(client, driver)["avg_daily_trips"]["statuses"] == ["NOT_FOUND"]

    landed = client.post(
        "/push", json={"push_source_name": PUSH, "df": _driver_df([driver], now, avg_daily_trips=3)}
    )
    assert landed.json()["written"] == 1
    cols = _read_driver(client, driver)
    assert cols["avg_daily_trips"]["values"] == [3]
    assert cols["avg_daily_trips"]["statuses"] == ["PRESENT"]


def test_delete_all_rows_of_a_view_keeps_other_views(fresh: AppClient) -> None:
    for driver in (940030, 940031):
        _pin(fresh, driver)
    profile = {
        "customer_id": ["c_keep"],
        "event_timestamp": [_iso(datetime.now(UTC))],
        "current_balance": [1.0],
        "lifetime_trip_count": [1],
        "avg_passenger_rating": [4.0],
        "membership_tier": ["gold"],
        "signup_ts": [0],
        "favourite_zones": [["a"]],
    }
    written = fresh.post(
        "/write-to-online-store", json={"feature_view_name": "customer_profile", "df": profile}
    )
    assert written.status_code == 200, written.text
    resp = fresh.request("DELETE", "/online/driver_hourly_stats", json={"all_rows": True})
    assert resp.json()["deleted"] == 2
    assert _read_driver(fresh, 940030)["conv_rate"]["statuses"] == ["NOT_FOUND"]
    kept = fresh.post(
        "/get-online-features",
        json={
            "entities": {"customer_id": ["c_keep"]},
            "features": ["customer_profile:membership_tier"],
        },
    )
    assert columns(kept.json())["membership_tier"]["values"] == ["gold"]


@pytest.mark.parametrize(
    ("body", "status", "mention"),
    [
        ({}, 422, "either"),
        ({"entities": {"driver_id": [1]}, "all_rows": True}, 422, "either"),
        ({"entities": {"driver_id": ["x"]}}, 422, "integer"),
        ({"entities": {"customer_id": [1]}}, 422, "driver_id"),
    ],
)
def test_bad_deletes_are_refused(
    client: AppClient, body: dict[str, Any], status: int, mention: str
) -> None:
    resp = client.request("DELETE", "/online/driver_hourly_stats", json=body)
    assert resp.status_code == status, resp.text
    assert mention in resp.json()["error"]["message"]


def test_delete_of_an_unknown_view_is_404(client: AppClient) -> None:
    resp = client.request("DELETE", "/online/nope", json={"all_rows": True})
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "feature_view_not_found"


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
    df = _driver_df([940040], datetime.now(UTC), **change)
    resp = client.post("/push", json={"push_source_name": PUSH, "df": df})
    error = _assert_refused(resp, "schema_mismatch", mention)
    assert error["column"] == column
    assert _read_driver(client, 940040)["conv_rate"]["statuses"] == ["NOT_FOUND"]


def test_largest_float32_is_kept(client: AppClient) -> None:
    df = _driver_df([940041], datetime.now(UTC), conv_rate=3.4028234663852886e38)
    assert client.post("/push", json={"push_source_name": PUSH, "df": df}).status_code == 200
    assert _read_driver(client, 940041)["conv_rate"]["values"] == [3.4028234663852886e38]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_floats_are_refused(client: AppClient, token: str) -> None:
    df = _driver_df([940042], datetime.now(UTC))
    text = json.dumps({"push_source_name": PUSH, "df": df})
    text = text.replace('"avg_rating": [4.75]', f'"avg_rating": [{token}]')
    resp = client.post("/push", content=text, headers={"content-type": "application/json"})
    _assert_refused(resp, "schema_mismatch", "finite")


def test_int32_overflow_is_refused(client: AppClient) -> None:
    df = {
        "driver_id": [940043],
        "customer_id": ["c_int32"],
        "event_timestamp": [_iso(datetime.now(UTC))],
        "trips_together": [2**31],
        "avg_tip": [1.0],
        "last_rating": [5],
    }
    resp = client.post(
        "/write-to-online-store", json={"feature_view_name": "driver_customer_stats", "df": df}
    )
    _assert_refused(resp, "schema_mismatch", "INT32 range")


def _profile(customer: str, **changes: Any) -> dict[str, list[Any]]:
    df: dict[str, Any] = {
        "customer_id": customer,
        "event_timestamp": _iso(datetime.now(UTC) - timedelta(seconds=1)),
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
    error = _assert_refused(resp, "schema_mismatch", "without nulls")
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
    df = _driver_df([940050], "0001-01-01T00:00:00+14:00")
    resp = client.post("/push", json={"push_source_name": PUSH, "df": df})
    _assert_refused(resp, "invalid_timestamp", "years 1 and 9999")


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
    _assert_refused(resp, "invalid_timestamp", "years 1..9999")


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
    df = json.dumps(_driver_df([940060], datetime.now(UTC)))
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


@pytest.fixture
def fresh(app_factory: Any, redis_server_factory: Any) -> AppClient:
    """An app on an empty Redis (for deletes of every row)."""
    server = redis_server_factory(persistent=False)
    app: AppClient = app_factory(redis_url=server.url)
    return app


def test_deeply_nested_training_json_is_a_4xx(client: AppClient) -> None:
    body = "[" * 100_000 + "]" * 100_000
    resp = client.post(
        "/training-dataset", content=body, headers={"content-type": "application/json"}
    )
    _assert_refused(resp, "invalid_request", "nested too deeply")


@pytest.mark.parametrize("value", [[1], {"a": 1}, "x", True])
def test_on_demand_request_data_of_the_wrong_type_is_refused(client: AppClient, value: Any) -> None:
    resp = client.post(
        "/get-online-features",
        json={
            "entities": {"driver_id": [1001], "distance_km": [value], "duration_min": [2.0]},
            "features": ["fare_estimate:estimated_fare"],
        },
    )
    error = _assert_refused(resp, "invalid_request", "expects DOUBLE")
    assert error["field"] == "distance_km"
