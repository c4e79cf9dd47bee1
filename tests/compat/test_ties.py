"""Full ties (same entity, event time and created time): the last row in source order wins.

Source order is Feast's file store's: files in the natural order of their paths (dask's
``natural_sort_key``: ``part-2`` before ``part-10``), rows in file order. Stock Feast reads
files in that order and keeps the last row after sorting, but its sorts are not stable
(pandas quicksort per partition), so among full ties it keeps the last row only where the
sort happens to keep input order: on this very data set it kept the first, a middle or
the last tied row depending on the key (docs/offline-store.md). Its choice cannot be
reproduced, so the naive rule below is the oracle, applied the same way, on every run,
in materialize, in the pull and in the point-in-time join.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

from online_store.embedded import EmbeddedRedis
from tests.online_store.feast_repo import DUCKDB, RepoSpec, make_store

T0 = datetime(2024, 1, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [("driver_id", pa.int64()), ("event_ts", TS), ("created", TS), ("v", pa.float64()),
     ("s", pa.string())]
)  # fmt: skip
# Written in this order on purpose: neither write order nor plain string order is the
# natural order (part-1, part-2, part-10).
FILES = ("part-10", "part-2", "part-1")
DRIVERS = (1, 2, 3)
WINDOW = (T0 - timedelta(days=1), T0 + timedelta(days=1))


def _write(data: Path) -> None:
    data.mkdir(parents=True)
    for f, name in enumerate(FILES):
        rows = [
            {
                "driver_id": d,
                # Driver 3's rows tie only inside each file (its time differs per file).
                "event_ts": T0 + timedelta(minutes=f if d == 3 else 0),
                "created": T0,
                "v": float(100 * f + r),
                "s": f"{name}/{d}/{r}",
            }
            for d in DRIVERS
            for r in range(3)
        ]
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), data / f"{name}.parquet")


def _natural(path: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def _reference(data: Path) -> dict[int, str]:
    """Naive rule: greatest (event, created); among equals the last row in source order."""
    best: dict[int, tuple[Any, ...]] = {}
    for path in sorted((str(p) for p in data.glob("*.parquet")), key=_natural):
        for row in pq.read_table(path).to_pylist():
            key = (row["event_ts"], row["created"])
            cur = best.get(row["driver_id"])
            if cur is None or key >= cur[0]:
                best[row["driver_id"]] = (key, row["s"])
    return {d: s for d, (_, s) in best.items()}


def _objects(data: Path) -> Any:
    def build() -> list[Any]:
        driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
        source = FileSource(
            path=str(data), timestamp_field="event_ts", created_timestamp_column="created"
        )
        schema = [
            Field(name="driver_id", dtype=Int64),
            Field(name="v", dtype=Float64),
            Field(name="s", dtype=String),
        ]
        view = FeatureView(name="fv", entities=[driver], schema=schema, source=source)
        return [driver, view]

    return build


def _snapshot(url: str) -> dict[bytes, dict[bytes, bytes]]:
    client = redis.Redis.from_url(url)
    try:
        return {key: client.hgetall(key) for key in client.scan_iter()}
    finally:
        client.close()


def _flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    root = tmp_path_factory.mktemp("ties")
    server = EmbeddedRedis(root / "redis", persistent=False)
    server.start()
    _write(root / "data")
    yield root, server.url.rsplit("/", 1)[0] + "/"
    server.stop()


def test_full_ties_materialize_the_last_row_in_source_order_on_every_rerun(
    world: tuple[Path, str],
) -> None:
    root, base = world
    ours = make_store(root / "ours", RepoSpec("p", base + "2", True, True, offline=DUCKDB),
                      _objects(root / "data"))  # fmt: skip
    ours.materialize(*WINDOW)
    first = _snapshot(base + "2")
    assert len(first) == len(DRIVERS)
    for _ in range(2):
        _flush(base + "2")
        ours.materialize(*WINDOW)
        assert _snapshot(base + "2") == first
    online = ours.get_online_features(
        features=["fv:s"], entity_rows=[{"driver_id": d} for d in DRIVERS]
    ).to_dict()
    expected = _reference(root / "data")
    assert online["s"] == [expected[d] for d in DRIVERS]
    assert online["s"][0] == "part-10/1/2"  # last file in natural order, last row


def test_full_ties_in_pull_and_point_in_time_join_keep_the_same_row(
    world: tuple[Path, str],
) -> None:
    root, base = world
    ours = make_store(root / "pit", RepoSpec("p", base + "3", True, True, offline=DUCKDB),
                      _objects(root / "data"))  # fmt: skip
    expected = _reference(root / "data")
    view = ours.get_feature_view("fv")
    job = ours._get_provider().offline_store.pull_latest_from_table_or_query(
        config=ours.config,
        data_source=view.batch_source,
        join_key_columns=["driver_id"],
        feature_name_columns=["v", "s"],
        timestamp_field="event_ts",
        created_timestamp_column="created",
        start_date=WINDOW[0],
        end_date=WINDOW[1],
    )
    pulled = {row["driver_id"]: row["s"] for row in job.to_arrow().to_pylist()}
    assert pulled == expected
    entity_df = pd.DataFrame(
        {"driver_id": list(DRIVERS) * 2, "event_timestamp": [T0 + timedelta(hours=1)] * 6}
    )
    for _ in range(2):
        frame = ours.get_historical_features(entity_df=entity_df, features=["fv:s"]).to_df()
        assert frame["s"].tolist() == [expected[d] for d in DRIVERS] * 2
