"""Feast's own local materialization engine reads our pulls: Parquet -> our store -> Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.offline_store.repo_helpers import DRIVER_SCHEMA, make_store, three_views, write_rows

T0 = datetime(2024, 10, 1, tzinfo=UTC)


def test_stock_engine_materializes_the_latest_rows_from_our_pulls(
    tmp_path: Path, redis_url: str
) -> None:
    fs = make_store(
        tmp_path, three_views(ttl_driver=timedelta(days=3650)), online="redis", redis_url=redis_url
    )
    rows = [
        {"driver_id": 1, "event_timestamp": T0, "created": T0, "rate": 0.1, "trips": 1},
        # A correction: same event time, later created time; it must win.
        {
            "driver_id": 1,
            "event_timestamp": T0,
            "created": T0 + timedelta(hours=1),
            "rate": 0.2,
            "trips": 2,
        },
        {
            "driver_id": 2,
            "event_timestamp": T0 + timedelta(hours=2),
            "created": None,
            "rate": None,
            "trips": 3,
        },
        # Outside the window (end is exclusive): never written.
        {
            "driver_id": 3,
            "event_timestamp": T0 + timedelta(days=1),
            "created": T0,
            "rate": 0.9,
            "trips": 9,
        },
    ]
    write_rows(tmp_path / "data" / "driver.parquet", DRIVER_SCHEMA, rows)

    fs.materialize(T0 - timedelta(days=1), T0 + timedelta(days=1), ["driver_fv"])

    online = fs.get_online_features(
        features=["driver_fv:rate", "driver_fv:trips"],
        entity_rows=[{"driver_id": 1}, {"driver_id": 2}, {"driver_id": 3}],
    ).to_dict()
    assert online["rate"] == [0.2, None, None]
    assert online["trips"] == [2, 3, None]
