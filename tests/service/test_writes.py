"""POST /push and /write-to-online-store: validated first, all-or-nothing, newest wins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from offline_store.listing import source_files
from tests.service.conftest import AppClient, Repo, columns, rfc3339

FEATURES = [
    "conv_rate",
    "acc_rate",
    "avg_daily_trips",
    "avg_rating",
    "surge_multiplier",
    "is_active",
]


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _driver_df(driver_ids: list[int], when: datetime, *, trips: int = 7) -> dict[str, list[Any]]:
    n = len(driver_ids)
    return {
        "driver_id": driver_ids,
        "event_timestamp": [_iso(when)] * n,
        "created": [_iso(when)] * n,
        "conv_rate": [0.25] * n,
        "acc_rate": [0.5] * n,
        "avg_daily_trips": [trips] * n,
        "avg_rating": [4.75] * n,
        "surge_multiplier": [1.5] * n,
        "is_active": [True] * n,
    }


def _read(client: AppClient, driver_ids: list[int]) -> dict[str, dict[str, list[Any]]]:
    resp = client.post(
        "/get-online-features",
        json={
            "entities": {"driver_id": driver_ids},
            "features": [f"driver_hourly_stats:{f}" for f in FEATURES],
        },
    )
    assert resp.status_code == 200, resp.text
    return columns(resp.json())


def _offline_rows(repo: Repo, driver_id: int) -> int:
    # the source file and the parts pushes added next to it
    table = pq.read_table(source_files(str(repo.path / "data" / "driver_stats.parquet")))
    return int(pc.sum(pc.equal(table.column("driver_id"), driver_id)).as_py() or 0)


def test_push_online_is_readable_and_typed(client: AppClient) -> None:
    when = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=250000)
    resp = client.post(
        "/push",
        json={
            "push_source_name": "driver_stats_push",
            "df": _driver_df([900001], when),
            "to": "online",
        },
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "status": "ok",
        "rows": 1,
        "written": 1,
        "skipped_older": 0,
        "offline_written": 0,
        "feature_views": ["driver_hourly_stats"],
        "to": "online",
    }
    cols = _read(client, [900001])
    assert cols["avg_daily_trips"]["values"] == [7]
    assert cols["conv_rate"]["values"] == [0.25]
    assert cols["is_active"]["values"] == [True]
    assert cols["avg_rating"]["statuses"] == ["PRESENT"]
    assert cols["avg_rating"]["event_timestamps"] == [rfc3339(when)]


def test_older_push_never_replaces_a_newer_value(client: AppClient) -> None:
    now = datetime.now(UTC)
    new = client.post(
        "/push",
        json={
            "push_source_name": "driver_stats_push",
            "df": _driver_df([900010], now - timedelta(minutes=1), trips=11),
        },
    )
    assert new.status_code == 200
    old = client.post(
        "/push",
        json={
            "push_source_name": "driver_stats_push",
            "df": _driver_df([900010], now - timedelta(hours=2), trips=3),
        },
    )
    assert old.status_code == 200
    # The answer says nothing was stored: the stored row is newer.
    assert (old.json()["rows"], old.json()["written"], old.json()["skipped_older"]) == (1, 0, 1)
    assert _read(client, [900010])["avg_daily_trips"]["values"] == [11]


def test_one_bad_row_rejects_the_whole_push(client: AppClient, repo: Repo) -> None:
    df = _driver_df([900020, 900021], datetime.now(UTC) - timedelta(minutes=5))
    df["conv_rate"][1] = "high"
    resp = client.post(
        "/push",
        json={"push_source_name": "driver_stats_push", "df": df, "to": "online_and_offline"},
    )
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["type"] == "schema_mismatch"
    assert error["column"] == "conv_rate"
    assert error["row"] == 1
    assert "'high'" in error["message"]
    assert _read(client, [900020, 900021])["conv_rate"]["statuses"] == ["NOT_FOUND", "NOT_FOUND"]
    assert _offline_rows(repo, 900020) == 0


def test_push_offline_appends_to_parquet_only(client: AppClient, repo: Repo) -> None:
    df = _driver_df([900030], datetime.now(UTC) - timedelta(minutes=5))
    resp = client.post(
        "/push", json={"push_source_name": "driver_stats_push", "df": df, "to": "offline"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["written"] == 1
    assert resp.json()["offline_written"] == 1
    assert _offline_rows(repo, 900030) == 1
    assert _read(client, [900030])["conv_rate"]["statuses"] == ["NOT_FOUND"]


def test_push_online_and_offline_writes_both(client: AppClient, repo: Repo) -> None:
    df = _driver_df([900040], datetime.now(UTC) - timedelta(minutes=5))
    del df["created"]  # optional: the offline row gets "now"
    resp = client.post(
        "/push",
        json={"push_source_name": "driver_stats_push", "df": df, "to": "online_and_offline"},
    )
    assert resp.status_code == 200, resp.text
    assert _offline_rows(repo, 900040) == 1
    assert _read(client, [900040])["conv_rate"]["statuses"] == ["PRESENT"]


def test_write_to_online_store_with_lists_and_timestamps(client: AppClient) -> None:
    when = datetime.now(UTC) - timedelta(days=400)  # ttl 0: never expires
    resp = client.post(
        "/write-to-online-store",
        json={
            "feature_view_name": "customer_profile",
            "df": {
                "customer_id": ["c_test_1"],
                "event_timestamp": [_iso(when)],
                "current_balance": [12.5],
                "lifetime_trip_count": [88],
                "avg_passenger_rating": [None],
                "membership_tier": ["gold"],
                "signup_ts": ["2024-03-01T00:00:00Z"],
                "favourite_zones": [["airport", "downtown"]],
            },
        },
    )
    assert resp.status_code == 200, resp.text
    resp = client.post(
        "/get-online-features",
        json={
            "entities": {"customer_id": ["c_test_1"]},
            "features": [
                "customer_profile:favourite_zones",
                "customer_profile:signup_ts",
                "customer_profile:avg_passenger_rating",
                "customer_profile:membership_tier",
            ],
        },
    )
    cols = columns(resp.json())
    assert cols["favourite_zones"]["values"] == [["airport", "downtown"]]
    assert cols["signup_ts"]["values"] == [int(datetime(2024, 3, 1, tzinfo=UTC).timestamp())]
    assert cols["avg_passenger_rating"]["statuses"] == ["NULL_VALUE"]
    assert cols["membership_tier"]["statuses"] == ["PRESENT"]


def test_value_past_ttl_reads_outside_max_age_with_its_time(client: AppClient) -> None:
    when = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)
    resp = client.post(
        "/write-to-online-store",
        json={"feature_view_name": "driver_hourly_stats", "df": _driver_df([900050], when)},
    )
    assert resp.status_code == 200, resp.text
    cols = _read(client, [900050])
    assert cols["conv_rate"]["statuses"] == ["OUTSIDE_MAX_AGE"]
    assert cols["conv_rate"]["values"] == [None]
    assert cols["conv_rate"]["event_timestamps"] == [rfc3339(when)]


def _bad(df_change: dict[str, Any]) -> dict[str, Any]:
    df = _driver_df([900099], datetime.now(UTC))
    for key, value in df_change.items():
        if value is None:
            df.pop(key)
        else:
            df[key] = value
    return df


SRC = "driver_stats_push"


def _case(
    name: str, body: dict[str, Any], status: int, error_type: str, mention: str
) -> tuple[str, dict[str, Any], int, str, str]:
    return (name, {"push_source_name": SRC, **body}, status, error_type, mention)


PUSH_CASES = [
    _case("unknown push source", {"push_source_name": "nope", "df": _bad({})}, 404,
          "push_source_not_found", SRC),
    _case("missing feature column", {"df": _bad({"conv_rate": None})}, 422, "schema_mismatch",
          "conv_rate"),
    _case("unknown column", {"df": _bad({"conv_rat": [0.1]})}, 422, "schema_mismatch",
          "conv_rat"),
    _case("bool for int", {"df": _bad({"avg_daily_trips": [True]})}, 422, "schema_mismatch",
          "avg_daily_trips"),
    _case("float for int", {"df": _bad({"avg_daily_trips": [1.5]})}, 422, "schema_mismatch",
          "integer"),
    _case("non-decimal string join key", {"df": _bad({"driver_id": ["d900099"]})}, 422,
          "schema_mismatch", "driver_id"),
    _case("null join key", {"df": _bad({"driver_id": [None]})}, 422, "schema_mismatch", "null"),
    _case("bad timestamp", {"df": _bad({"event_timestamp": ["yesterday"]})}, 422,
          "invalid_timestamp", "RFC 3339"),
    _case("empty df", {"df": {}}, 422, "schema_mismatch", "non-empty"),
    _case("ragged df", {"df": _bad({"conv_rate": [0.1, 0.2]})}, 422, "schema_mismatch",
          "lengths"),
    _case("bad target", {"df": _bad({}), "to": "redis"}, 422, "validation_error", "to"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "error_type", "mention"),
    [c[1:] for c in PUSH_CASES],
    ids=[c[0] for c in PUSH_CASES],
)
def test_bad_push_is_refused_before_any_write(
    client: AppClient, body: dict[str, Any], status: int, error_type: str, mention: str
) -> None:
    resp = client.post("/push", json=body)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["type"] == error_type
    assert mention in error["message"]
    assert _read(client, [900099])["conv_rate"]["statuses"] == ["NOT_FOUND"]


def test_mixed_naive_and_aware_timestamps_are_refused(client: AppClient) -> None:
    df = _driver_df([900098, 900097], datetime.now(UTC))
    df["event_timestamp"] = ["2026-11-26T10:00:00Z", "2026-11-26T10:00:00"]
    resp = client.post("/push", json={"push_source_name": "driver_stats_push", "df": df})
    assert resp.status_code == 422
    assert resp.json()["error"]["type"] == "invalid_timestamp"
    assert "offset" in resp.json()["error"]["message"]


def test_write_to_unknown_view_is_404(client: AppClient) -> None:
    resp = client.post(
        "/write-to-online-store", json={"feature_view_name": "nope", "df": {"a": [1]}}
    )
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "feature_view_not_found"


def _write_body(route: str, df: dict[str, list[Any]]) -> dict[str, Any]:
    if route == "/push":
        return {"push_source_name": "driver_stats_push", "df": df, "to": "online_and_offline"}
    return {"feature_view_name": "driver_hourly_stats", "df": df}


@pytest.mark.parametrize("route", ["/push", "/write-to-online-store"])
def test_an_int_join_key_as_a_decimal_string_or_integral_float_is_written_as_that_entity(
    client: AppClient, repo: Repo, route: str
) -> None:
    # the forms a lookup reads as the integer (protobuf JSON's int64 string, JS numbers)
    base = 900_620 if route == "/push" else 900_630
    when = datetime.now(UTC) - timedelta(minutes=5)
    for spelling, driver in ((str(base), base), (float(base + 1), base + 1)):
        df = _driver_df([driver], when)
        df["driver_id"] = [spelling]
        resp = client.post(route, json=_write_body(route, df))
        assert resp.status_code == 200, resp.text
        assert resp.json()["written"] == 1
        lookup = client.post(
            "/get-online-features",
            json={
                "entities": {"driver_id": [spelling]},
                "features": ["driver_hourly_stats:acc_rate"],
            },
        )
        assert columns(lookup.json())["acc_rate"]["statuses"] == ["PRESENT"], lookup.text
        assert _read(client, [driver])["avg_daily_trips"]["values"] == [7]
        assert _offline_rows(repo, driver) == (1 if route == "/push" else 0)


@pytest.mark.parametrize("route", ["/push", "/write-to-online-store"])
@pytest.mark.parametrize(
    ("bad", "fix"),
    [
        ("6.5", 'decimal string such as "1001"'),
        (900_640.5, "send the exact integer"),
        (True, "JSON number"),
        ("0900640", "no leading zeros"),
        ("900_640", "no sign other than"),
        (2.0**60, "2**53"),
        ("9223372036854775808", "INT64 range"),
    ],
)
def test_an_int_join_key_a_lookup_refuses_is_refused_on_write_naming_the_fix(
    client: AppClient, repo: Repo, route: str, bad: Any, fix: str
) -> None:
    lookup = client.post(
        "/get-online-features",
        json={"entities": {"driver_id": [bad]}, "features": ["driver_hourly_stats:acc_rate"]},
    )
    assert lookup.status_code == 422, lookup.text
    df = _driver_df([900_640], datetime.now(UTC) - timedelta(minutes=5))
    df["driver_id"] = [bad]
    resp = client.post(route, json=_write_body(route, df))
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert (error["type"], error["column"], error["row"]) == ("schema_mismatch", "driver_id", 0)
    assert fix in error["message"], error
    assert _read(client, [900_640])["conv_rate"]["statuses"] == ["NOT_FOUND"]
    assert _offline_rows(repo, 900_640) == 0
