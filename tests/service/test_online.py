"""POST /get-online-features against the materialized example repo and a naive reference."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from tests.service.conftest import AppClient, Repo, columns, rfc3339, some_ids

DRIVER_FEATURES = [
    "conv_rate",
    "acc_rate",
    "avg_daily_trips",
    "avg_rating",
    "surge_multiplier",
    "is_active",
]
DAY = 86400
MISSING_DRIVER = 4_000_000_001


def _expected(row: dict[str, Any] | None, feature: str, ttl: int, now: datetime) -> tuple[Any, str]:
    if row is None:
        return None, "NOT_FOUND"
    if ttl and (now - row["event_timestamp"]).total_seconds() > ttl:
        return None, "OUTSIDE_MAX_AGE"
    value = row[feature]
    return value, "NULL_VALUE" if value is None else "PRESENT"


def _near_ttl_edge(row: dict[str, Any] | None, ttl: int, now: datetime) -> bool:
    return row is not None and abs((now - row["event_timestamp"]).total_seconds() - ttl) < 120


def test_driver_values_statuses_and_times_match_latest_parquet_rows(
    client: AppClient, repo: Repo
) -> None:
    latest = repo.latest("driver_stats", ["driver_id"])
    drivers = [*sorted(k[0] for k in latest)[:60], MISSING_DRIVER]
    resp = client.post(
        "/get-online-features",
        json={
            "entities": {"driver_id": drivers},
            "features": [f"driver_hourly_stats:{f}" for f in DRIVER_FEATURES],
        },
    )
    now = datetime.now(UTC)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    cols = columns(resp.json())
    assert cols["driver_id"]["values"] == drivers
    assert set(cols["driver_id"]["statuses"]) == {"PRESENT"}
    assert set(cols["driver_id"]["event_timestamps"]) == {"1970-01-01T00:00:00Z"}
    seen = set()
    for feature in DRIVER_FEATURES:
        col = cols[feature]
        for j, driver in enumerate(drivers):
            row = latest.get((driver,))
            if _near_ttl_edge(row, DAY, now):
                continue
            value, status = _expected(row, feature, DAY, now)
            assert col["statuses"][j] == status, (driver, feature)
            if isinstance(value, float):
                assert col["values"][j] == value, (driver, feature)
            else:
                assert col["values"][j] == value, (driver, feature)
            if status == "NOT_FOUND":
                assert col["event_timestamps"][j] == "1970-01-01T00:00:00Z"
            else:
                assert row is not None
                assert col["event_timestamps"][j] == rfc3339(row["event_timestamp"])
            seen.add(status)
    # The generated data covers every status except none (a stored null appears at 2%).
    assert {"PRESENT", "NOT_FOUND", "OUTSIDE_MAX_AGE", "NULL_VALUE"} <= seen


def test_three_views_with_different_join_keys_in_one_request(client: AppClient, repo: Repo) -> None:
    pairs = sorted(repo.latest("driver_customer_stats", ["driver_id", "customer_id"]).items())[:15]
    profiles = repo.latest("customer_profile", ["customer_id"])
    drivers = repo.latest("driver_stats", ["driver_id"])
    driver_ids = [k[0] for k, _ in pairs]
    customer_ids = [k[1] for k, _ in pairs]
    resp = client.post(
        "/get-online-features",
        json={
            "entities": {"customer_id": customer_ids, "driver_id": driver_ids},
            "features": [
                "driver_customer_stats:trips_together",
                "customer_profile:membership_tier",
                "customer_profile:signup_ts",
                "customer_profile:favourite_zones",
                "driver_hourly_stats:avg_daily_trips",
            ],
        },
    )
    now = datetime.now(UTC)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    # Join keys first, in the order the request gave them.
    assert body["metadata"]["feature_names"][:2] == ["customer_id", "driver_id"]
    cols = columns(body)
    for j, ((driver, customer), pair) in enumerate(pairs):
        value, status = _expected(pair, "trips_together", 30 * DAY, now)
        assert (cols["trips_together"]["values"][j], cols["trips_together"]["statuses"][j]) == (
            value,
            status,
        )
        profile = profiles.get((customer,))
        tier, status = _expected(profile, "membership_tier", 0, now)
        assert cols["membership_tier"]["statuses"][j] == status
        assert cols["membership_tier"]["values"][j] == tier
        if profile is not None:
            signup = profile["signup_ts"]
            expected_signup = None if signup is None else int(signup.timestamp())
            assert cols["signup_ts"]["values"][j] == expected_signup
            assert cols["favourite_zones"]["values"][j] == profile["favourite_zones"]
        row = drivers.get((driver,))
        if not _near_ttl_edge(row, DAY, now):
            assert (
                cols["avg_daily_trips"]["values"][j]
                == _expected(row, "avg_daily_trips", DAY, now)[0]
            )


def test_full_feature_names_prefix_the_view(client: AppClient, repo: Repo) -> None:
    driver = some_ids(repo, "driver_stats", "driver_id", 1)
    resp = client.post(
        "/get-online-features",
        json={
            "entities": {"driver_id": driver},
            "features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_rating"],
            "full_feature_names": True,
        },
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["metadata"]["feature_names"] == [
        "driver_id",
        "driver_hourly_stats__conv_rate",
        "driver_hourly_stats__avg_rating",
    ]


def test_feature_service_with_on_demand_view_computes_the_fare(
    client: AppClient, repo: Repo
) -> None:
    pairs = sorted(repo.latest("driver_customer_stats", ["driver_id", "customer_id"]))[:5]
    drivers = repo.latest("driver_stats", ["driver_id"])
    distance = [1.0, 2.5, 10.0, 0.0, 7.25]
    duration = [5.0, 12.0, 30.0, 1.0, 20.0]
    resp = client.post(
        "/get-online-features",
        json={
            "entities": {
                "driver_id": [d for d, _ in pairs],
                "customer_id": [c for _, c in pairs],
                "distance_km": distance,
                "duration_min": duration,
            },
            "feature_service": "ride_ranking_v1",
        },
    )
    now = datetime.now(UTC)
    assert resp.status_code == 200, resp.text
    cols = columns(resp.json())
    # Request data is input to the on-demand view, not an output column (as in Feast).
    assert "distance_km" not in cols
    assert {"conv_rate", "membership_tier", "trips_together", "estimated_fare"} <= set(cols)
    assert "surge_multiplier" not in cols  # read for the ODFV, not requested by the service
    for j, (driver, _) in enumerate(pairs):
        row = drivers.get((driver,))
        if _near_ttl_edge(row, DAY, now):
            continue
        surge, _ = _expected(row, "surge_multiplier", DAY, now)
        fare = (2.5 + 1.2 * distance[j] + 0.3 * duration[j]) * (1.0 if surge is None else surge)
        assert cols["estimated_fare"]["values"][j] == fare
        assert cols["estimated_fare"]["statuses"][j] == "PRESENT"


def test_duplicate_entity_rows_each_get_their_row(client: AppClient, repo: Repo) -> None:
    driver = some_ids(repo, "driver_stats", "driver_id", 1)[0]
    resp = client.post(
        "/get-online-features",
        json={
            "entities": {"driver_id": [driver, MISSING_DRIVER, driver]},
            "features": ["driver_hourly_stats:avg_daily_trips"],
        },
    )
    col = columns(resp.json())["avg_daily_trips"]
    assert col["values"][0] == col["values"][2]
    assert col["statuses"][1] == "NOT_FOUND"
    assert col["statuses"][0] == col["statuses"][2]


def test_read_plan_is_compiled_once_per_feature_set(client: AppClient, repo: Repo) -> None:
    driver = some_ids(repo, "driver_stats", "driver_id", 2)
    request = {
        "entities": {"driver_id": driver},
        "features": ["driver_hourly_stats:acc_rate", "driver_hourly_stats:is_active"],
    }
    plans = client.state.catalog.snapshot.plans
    client.post("/get-online-features", json=request)
    after_first = len(plans)
    for _ in range(3):
        assert client.post("/get-online-features", json=request).status_code == 200
    assert len(plans) == after_first
    client.post("/get-online-features", json={**request, "full_feature_names": True})
    assert len(plans) == after_first + 1


def test_zero_entity_rows_give_empty_columns(client: AppClient) -> None:
    resp = client.post(
        "/get-online-features",
        json={"entities": {"driver_id": []}, "features": ["driver_hourly_stats:conv_rate"]},
    )
    assert resp.status_code == 200, resp.text
    assert columns(resp.json())["conv_rate"]["values"] == []


def test_concurrent_lookups_sharing_the_pipelined_connection_get_their_own_rows(
    client: AppClient, repo: Repo
) -> None:
    drivers = sorted(k[0] for k in repo.latest("driver_stats", ["driver_id"]))[:40]
    customers = sorted(k[0] for k in repo.latest("customer_profile", ["customer_id"]))[:40]
    bodies: list[dict[str, Any]] = []
    for i in range(40):
        if i % 2:
            bodies.append(
                {
                    "entities": {"driver_id": [drivers[i]]},
                    "features": ["driver_hourly_stats:avg_daily_trips"],
                }
            )
        else:
            bodies.append({"entities": {"customer_id": [customers[i], customers[-1 - i]]},
                           "features": ["customer_profile:lifetime_trip_count"]})  # fmt: skip
    sequential = [client.post("/get-online-features", json=b).json() for b in bodies]

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(
            *(client.client.post("/get-online-features", json=b) for b in bodies)
        )

    concurrent = [r.json() for r in client.run(all_at_once())]
    assert concurrent == sequential
