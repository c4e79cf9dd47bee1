"""What was accepted is kept, what is newest wins: the clock rule, exact values, honest
write answers, the pinned-key repair, and caller input that never reaches a 500."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from offline_store.listing import source_files
from online_store.writer import write_arrow
from service.metrics import Metrics
from tests.service.conftest import AppClient, Repo, columns
from tests.service.write_helpers import PUSH, assert_refused, driver_df, iso, read_driver


def _offline_rows(repo: Repo, driver_id: int) -> int:
    table = pq.read_table(source_files(str(repo.path / "data" / "driver_stats.parquet")))
    return int(pc.sum(pc.equal(table.column("driver_id"), driver_id)).as_py() or 0)


# --- the clock rule ---------------------------------------------------------------------


@pytest.mark.parametrize("to", ["online", "offline", "online_and_offline"])
def test_push_far_in_the_future_is_refused_naming_the_limit(
    client: AppClient, repo: Repo, to: str
) -> None:
    driver = {"online": 940001, "offline": 940002, "online_and_offline": 940003}[to]
    df = driver_df([driver], "9999-12-31T23:59:59Z")
    resp = client.post("/push", json={"push_source_name": PUSH, "df": df, "to": to})
    error = assert_refused(resp, "invalid_timestamp", "FEATURESTORE_MAX_FUTURE_SKEW_SECONDS")
    assert error["column"] == "event_timestamp"
    assert datetime.fromisoformat(error["limit"]) < datetime.now(UTC) + timedelta(minutes=6)
    assert read_driver(client, driver)["conv_rate"]["statuses"] == ["NOT_FOUND"]
    assert _offline_rows(repo, driver) == 0


def test_write_to_online_store_in_the_future_is_refused(client: AppClient) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    resp = client.post(
        "/write-to-online-store",
        json={"feature_view_name": "driver_hourly_stats", "df": driver_df([940004], soon)},
    )
    assert_refused(resp, "invalid_timestamp", "300 s ahead")
    assert read_driver(client, 940004)["conv_rate"]["statuses"] == ["NOT_FOUND"]


def test_event_time_within_the_allowed_skew_is_accepted(client: AppClient) -> None:
    soon = (datetime.now(UTC) + timedelta(minutes=2)).replace(microsecond=0)
    resp = client.post("/push", json={"push_source_name": PUSH, "df": driver_df([940005], soon)})
    assert resp.status_code == 200, resp.text
    assert read_driver(client, 940005)["conv_rate"]["statuses"] == ["PRESENT"]


def test_future_created_timestamp_is_refused_too(client: AppClient) -> None:
    df = driver_df([940006], datetime.now(UTC), created="9999-01-01T00:00:00Z")
    resp = client.post("/push", json={"push_source_name": PUSH, "df": df, "to": "offline"})
    error = assert_refused(resp, "invalid_timestamp")
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
    error = assert_refused(resp, "invalid_timestamp", "end_ts", "ahead of the server clock")
    assert error["field"] == "end_ts"


def test_skew_limit_is_a_setting(app_factory: Any) -> None:
    strict = app_factory(max_future_skew_seconds=0)
    soon = datetime.now(UTC) + timedelta(seconds=30)
    resp = strict.post("/push", json={"push_source_name": PUSH, "df": driver_df([940007], soon)})
    assert_refused(resp, "invalid_timestamp", "0 s ahead")


# --- write answers ----------------------------------------------------------------------


def test_write_answer_counts_written_and_skipped_older_rows(client: AppClient) -> None:
    now = datetime.now(UTC)
    first = client.post(
        "/push", json={"push_source_name": PUSH, "df": driver_df([940010, 940011], now)}
    )
    assert first.json()["written"] == 2
    # 940010 older than stored (skipped), 940012 new (written), 940011 twice in one
    # request: the newer of the two wins, the other is skipped.
    df = driver_df([940010, 940012, 940011, 940011], now - timedelta(hours=1))
    df["event_timestamp"][3] = iso(now + timedelta(seconds=1))
    resp = client.post("/push", json={"push_source_name": PUSH, "df": df, "to": "online"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["rows"], body["written"], body["skipped_older"]) == (4, 2, 2)
    assert body["offline_written"] == 0


def test_an_offline_and_online_push_reports_both_sides(client: AppClient) -> None:
    when = datetime.now(UTC) - timedelta(minutes=1)
    df = driver_df([940013], when)
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
        "/push", json={"push_source_name": PUSH, "df": driver_df([driver], now, avg_daily_trips=3)}
    )
    assert (blocked.json()["written"], blocked.json()["skipped_older"]) == (0, 1)
    assert read_driver(client, driver)["avg_daily_trips"]["values"] == [999]

    resp = client.request(
        "DELETE", "/online/driver_hourly_stats", json={"entities": {"driver_id": [driver, 940021]}}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"status": "ok", "feature_view": "driver_hourly_stats", "deleted": 1}
    assert read_driver(client, driver)["avg_daily_trips"]["statuses"] == ["NOT_FOUND"]

    landed = client.post(
        "/push", json={"push_source_name": PUSH, "df": driver_df([driver], now, avg_daily_trips=3)}
    )
    assert landed.json()["written"] == 1
    cols = read_driver(client, driver)
    assert cols["avg_daily_trips"]["values"] == [3]
    assert cols["avg_daily_trips"]["statuses"] == ["PRESENT"]


def test_delete_all_rows_of_a_view_keeps_other_views(fresh: AppClient) -> None:
    for driver in (940030, 940031):
        _pin(fresh, driver)
    profile = {
        "customer_id": ["c_keep"],
        "event_timestamp": [iso(datetime.now(UTC))],
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
    assert read_driver(fresh, 940030)["conv_rate"]["statuses"] == ["NOT_FOUND"]
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


@pytest.fixture
def fresh(app_factory: Any, redis_server_factory: Any) -> AppClient:
    """An app on an empty Redis (for deletes of every row)."""
    server = redis_server_factory(persistent=False)
    app: AppClient = app_factory(redis_url=server.url)
    return app
