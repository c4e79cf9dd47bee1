"""Push bodies, read-backs and offline faults shared by the write tests."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from unittest import mock

import pyarrow.parquet as pq

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


def write_online(client: AppClient, view: str, df: dict[str, list[Any]]) -> Any:
    """``POST /write-to-online-store`` of columns ``df`` to ``view``; the response."""
    return client.post("/write-to-online-store", json={"feature_view_name": view, "df": df})


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


@contextmanager
def offline_disk_full(phase: Literal["stage", "commit"], *, nth: int = 1) -> Iterator[None]:
    """The disk fills up (ENOSPC) on the ``nth`` offline file of the block: while Parquet
    writes it (``stage``) or when it is renamed to its final ``part-...`` name (``commit``;
    rename(2) needs room for the directory entry)."""
    full = OSError(errno.ENOSPC, "No space left on device")
    calls = 0
    real_write, real_replace = pq.write_table, os.replace

    def write(table: Any, where: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == nth:
            raise full
        real_write(table, where, *args, **kwargs)

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        if os.path.basename(os.fspath(dst)).startswith("part-"):
            calls += 1
            if calls == nth:
                raise full
        real_replace(src, dst, *args, **kwargs)

    if phase == "stage":
        with mock.patch("pyarrow.parquet.write_table", side_effect=write):
            yield
    else:
        with mock.patch("os.replace", side_effect=replace):
            yield


def leftovers(root: Path) -> list[Path]:
    """Staged files (``.push-*.tmp``) anywhere below ``root``."""
    return sorted(root.rglob(".push-*"))
