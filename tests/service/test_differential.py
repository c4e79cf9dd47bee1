"""Ours vs stock ``feast serve`` on the same registry and the same Redis.

Identical values and event timestamps for present entities; identical statuses except
where Feast 0.67 is wrong: a missing entity (Feast: ``PRESENT`` with null, ours
``NOT_FOUND``) and a value past the view TTL (Feast: the stale value as ``PRESENT``,
ours ``OUTSIDE_MAX_AGE`` with null and the stored event time). A stored null is
``PRESENT`` with a null value in Feast's Python server; ours says ``NULL_VALUE``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.service.conftest import AppClient, Repo, columns
from tests.service.differential_helpers import MISSING_DRIVER, compare

STALE_DRIVER = 910_001


@pytest.fixture(scope="module")
def stale_driver(client: AppClient) -> int:
    when = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)
    iso = when.isoformat().replace("+00:00", "Z")
    resp = client.post(
        "/write-to-online-store",
        json={
            "feature_view_name": "driver_hourly_stats",
            "df": {
                "driver_id": [STALE_DRIVER], "event_timestamp": [iso], "created": [iso],
                "conv_rate": [0.5], "acc_rate": [0.25], "avg_daily_trips": [9],
                "avg_rating": [4.5], "surge_multiplier": [2.0], "is_active": [False],
            },
        },
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    return STALE_DRIVER


def _both(client: AppClient, feast_serve: httpx.Client, body: dict[str, Any]) -> set[str]:
    ours = client.post("/get-online-features", json=body)
    theirs = feast_serve.post("/get-online-features", json=body)
    assert ours.status_code == 200, ours.text
    assert theirs.status_code == 200, theirs.text
    return compare(ours.json(), theirs.json())


def test_driver_view_matches_feast_serve(
    client: AppClient, feast_serve: httpx.Client, repo: Repo, stale_driver: int
) -> None:
    drivers = sorted({k[0] for k in repo.latest("driver_stats", ["driver_id"])})[:40]
    features = ["conv_rate", "acc_rate", "avg_daily_trips", "avg_rating", "surge_multiplier",
                "is_active"]  # fmt: skip
    seen = _both(
        client,
        feast_serve,
        {
            "entities": {"driver_id": [*drivers, MISSING_DRIVER, stale_driver]},
            "features": [f"driver_hourly_stats:{f}" for f in features],
        },
    )
    assert {"PRESENT", "NOT_FOUND", "OUTSIDE_MAX_AGE"} <= seen


@pytest.mark.parametrize("full_feature_names", [False, True])
def test_three_views_and_types_match_feast_serve(
    client: AppClient, feast_serve: httpx.Client, repo: Repo, full_feature_names: bool
) -> None:
    pairs = sorted(repo.latest("driver_customer_stats", ["driver_id", "customer_id"]))[:25]
    seen = _both(
        client,
        feast_serve,
        {
            "entities": {
                "driver_id": [d for d, _ in pairs] + [MISSING_DRIVER],
                "customer_id": [c for _, c in pairs] + ["c_missing"],
            },
            "features": [
                "driver_customer_stats:trips_together",
                "driver_customer_stats:avg_tip",
                "customer_profile:current_balance",
                "customer_profile:lifetime_trip_count",
                "customer_profile:avg_passenger_rating",
                "customer_profile:membership_tier",
                "customer_profile:signup_ts",
                "customer_profile:favourite_zones",
                "driver_hourly_stats:avg_rating",
            ],
            "full_feature_names": full_feature_names,
        },
    )
    assert {"PRESENT", "NOT_FOUND"} <= seen


@pytest.mark.parametrize("full_feature_names", [False, True])
def test_feature_service_with_on_demand_view_matches_feast_serve(
    client: AppClient, feast_serve: httpx.Client, repo: Repo, full_feature_names: bool
) -> None:
    pairs = sorted(repo.latest("driver_customer_stats", ["driver_id", "customer_id"]))[:10]
    body = {
        "entities": {
            "driver_id": [d for d, _ in pairs],
            "customer_id": [c for _, c in pairs],
            "distance_km": [float(i) for i in range(10)],
            "duration_min": [2.0 * i for i in range(10)],
        },
        "feature_service": "ride_ranking_v1",
        "full_feature_names": full_feature_names,
    }
    fare = "fare_estimate__estimated_fare" if full_feature_names else "estimated_fare"
    conv = "driver_hourly_stats__conv_rate" if full_feature_names else "conv_rate"
    ours = client.post("/get-online-features", json=body).json()
    theirs = feast_serve.post("/get-online-features", json=body).json()
    mine = columns(ours)
    # A stale driver row feeds Feast's fare with a value ours treats as expired.
    stale = [s == "OUTSIDE_MAX_AGE" for s in mine[conv]["statuses"]]
    fare_ours = mine.pop(fare)
    fare_feast = columns(theirs)[fare]
    for j, is_stale in enumerate(stale):
        if not is_stale:
            assert fare_ours["values"][j] == fare_feast["values"][j]
        assert fare_ours["statuses"][j] == fare_feast["statuses"][j] == "PRESENT"
    names = [n for n in ours["metadata"]["feature_names"] if n != fare]
    trimmed = {
        "metadata": {"feature_names": names},
        "results": [mine[n] for n in names],
    }
    feast_cols = columns(theirs)
    feast_cols.pop(fare)
    compare(
        trimmed, {"metadata": {"feature_names": names}, "results": [feast_cols[n] for n in names]}
    )


def test_feature_view_version_metadata_matches_feast_serve(
    client: AppClient, feast_serve: httpx.Client
) -> None:
    body = {
        "entities": {"driver_id": [1001], "customer_id": ["c_0000001"]},
        "features": ["driver_hourly_stats:conv_rate", "customer_profile:membership_tier"],
        "include_feature_view_version_metadata": True,
    }
    ours = client.post("/get-online-features", json=body).json()["metadata"]
    theirs = feast_serve.post("/get-online-features", json=body).json()["metadata"]
    key = "feature_view_metadata"
    assert sorted(ours[key], key=str) == sorted(theirs[key], key=str)
    assert {m["name"] for m in ours[key]} == {"driver_hourly_stats", "customer_profile"}


def test_extra_join_keys_are_echoed_like_feast_serve(
    client: AppClient, feast_serve: httpx.Client, repo: Repo
) -> None:
    pairs = sorted(repo.latest("driver_customer_stats", ["driver_id", "customer_id"]))[:5]
    body = {
        "entities": {
            "customer_id": [c for _, c in pairs],  # a join key, not needed by these features
            "note": ["x"] * len(pairs),  # not a join key: dropped
            "driver_id": [d for d, _ in pairs],
        },
        "features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"],
    }
    ours = client.post("/get-online-features", json=body)
    theirs = feast_serve.post("/get-online-features", json=body)
    assert ours.status_code == theirs.status_code == 200
    names = ours.json()["metadata"]["feature_names"]
    feast_names = theirs.json()["metadata"]["feature_names"]
    # Keys first, in the request's order; Feast orders a view's features by set iteration,
    # ours keep the request's order.
    assert names == ["customer_id", "driver_id", "conv_rate", "avg_daily_trips"]
    assert feast_names[:2] == names[:2]
    assert set(feast_names) == set(names)
    assert columns(ours.json())["customer_id"] == columns(theirs.json())["customer_id"]
    compare(ours.json(), theirs.json())


@pytest.mark.parametrize("full_feature_names", [False, True])
def test_latest_version_suffix_reads_the_view_like_feast_serve(
    client: AppClient, feast_serve: httpx.Client, repo: Repo, full_feature_names: bool
) -> None:
    drivers = sorted({k[0] for k in repo.latest("driver_stats", ["driver_id"])})[:5]
    body = {
        "entities": {"driver_id": [*drivers, MISSING_DRIVER]},
        "features": ["driver_hourly_stats@latest:conv_rate", "driver_hourly_stats@:acc_rate"],
        "full_feature_names": full_feature_names,
    }
    _both(client, feast_serve, body)
    plain = {**body, "features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate"]}
    assert client.post("/get-online-features", json=body).json() == (
        client.post("/get-online-features", json=plain).json()
    )


def test_a_pinned_version_is_refused_naming_the_unpinned_ref(client: AppClient) -> None:
    body = {"entities": {"driver_id": [1001]}, "features": ["driver_hourly_stats@v2:conv_rate"]}
    resp = client.post("/get-online-features", json=body)
    assert resp.status_code == 422, resp.text
    assert '"driver_hourly_stats:conv_rate"' in resp.json()["error"]["message"]
