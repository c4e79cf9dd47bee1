"""Concurrent ``/push`` with ``to: offline`` over HTTP: every 200 is a row kept, once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow.compute as pc
import pyarrow.parquet as pq

from offline_store.listing import source_files
from tests.service.conftest import AppClient, Repo, ServeProcess


def _one_row(driver_id: int) -> dict[str, Any]:
    when = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    return {
        "push_source_name": "driver_stats_push",
        "to": "offline",
        "df": {
            "driver_id": [driver_id],
            "event_timestamp": [when],
            "conv_rate": [0.5],
            "acc_rate": [0.5],
            "avg_daily_trips": [1],
            "avg_rating": [4.0],
            "surge_multiplier": [1.0],
            "is_active": [True],
        },
    }


def _counts(repo: Repo, ids: list[int]) -> dict[int, int]:
    table = pq.read_table(source_files(str(repo.path / "data" / "driver_stats.parquet")))
    mine = table.filter(pc.is_in(table.column("driver_id"), value_set=pc.cast(ids, "int64")))
    found = mine.column("driver_id").to_pylist()
    return {i: found.count(i) for i in ids}


def test_twenty_concurrent_offline_pushes_all_land_once(client: AppClient, repo: Repo) -> None:
    ids = list(range(930_000, 930_020))
    start = threading.Barrier(len(ids))

    def push(driver_id: int) -> int:
        start.wait()
        return client.post("/push", json=_one_row(driver_id)).status_code

    with ThreadPoolExecutor(len(ids)) as pool:
        statuses = list(pool.map(push, ids))
    assert statuses == [200] * len(ids)
    assert _counts(repo, ids) == dict.fromkeys(ids, 1)


def test_pushes_to_two_worker_processes_keep_every_row(repo: Repo, tmp_path: Path) -> None:
    server = ServeProcess(repo, tmp_path / "serve.log", "--workers", "2")
    ids = list(range(931_000, 931_060))
    try:

        def push(chunk: list[int]) -> list[int]:
            out = []
            for driver_id in chunk:  # a new connection each time: both workers take some
                out.append(
                    httpx.post(
                        f"{server.url}/push", json=_one_row(driver_id), timeout=60
                    ).status_code
                )
            return out

        with ThreadPoolExecutor(6) as pool:
            statuses = [s for part in pool.map(push, [ids[i::6] for i in range(6)]) for s in part]
    finally:
        log = server.stop()
    assert statuses == [200] * len(ids), log
    assert _counts(repo, ids) == dict.fromkeys(ids, 1)
