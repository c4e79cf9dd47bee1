"""Push bodies and read-backs shared by the write tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.service.conftest import AppClient, columns

DRIVER_FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips", "avg_rating", "surge_multiplier",
                   "is_active"]  # fmt: skip


PUSH = "driver_stats_push"


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def driver_df(ids: list[int], when: datetime | str, **changes: Any) -> dict[str, list[Any]]:
    stamp = when if isinstance(when, str) else iso(when)
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


def read_driver(client: AppClient, driver_id: int) -> dict[str, dict[str, list[Any]]]:
    resp = client.post(
        "/get-online-features",
        json={
            "entities": {"driver_id": [driver_id]},
            "features": [f"driver_hourly_stats:{f}" for f in DRIVER_FEATURES],
        },
    )
    assert resp.status_code == 200, resp.text
    return columns(resp.json())


def assert_refused(resp: Any, error_type: str, *mentions: str) -> dict[str, Any]:
    assert resp.status_code == 422, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["type"] == error_type
    for mention in mentions:
        assert mention in error["message"], error
    return error
