"""The Spark store's two join plans: which one ``auto`` picks, and that both give DuckDB's answer.

The broadcast plan (offline_store/spark_pairs.py) ships small pandas/Arrow entity rows to the
scans of the feature rows instead of shuffling and sorting the feature rows with them; it is
only chosen where its work is bounded (TTLs on every view, no hot key). Exactness of both plans
against the naive reference is in test_pit_properties.py; here a training set shaped like a
user's (many drivers, a day's TTL, duplicates, created-time ties, nulls) is checked against the
DuckDB store, with the plan itself looked at.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import FeatureStore, FeatureView, Field, FileSource
from feast.types import Float64, Int64

from offline_store import spark_pairs
from offline_store.pit_join import FeatureSpec
from offline_store.spark_join import SparkView
from offline_store.spark_pairs import choose_strategy, key_share
from tests.offline_store.repo_helpers import DRIVER, SPARK_STORE, make_store

T0 = datetime(2024, 1, 1, tzinfo=UTC)
DRIVERS = 1000


def view(keys: tuple[str, ...] = ("driver_id",), ttl_micros: int = 86_400_000_000) -> SparkView:
    return SparkView(
        name="stats",
        frame=None,
        column_map={},
        join_keys=tuple((k, k) for k in keys),
        timestamp_field="event_timestamp",
        created_timestamp_column=None,
        features=(FeatureSpec("rate", "rate"),),
        ttl_micros=ttl_micros,
    )


def local_rows(ids: list[int]) -> pa.Table:
    return pa.table({"driver_id": ids, "event_timestamp": [T0] * len(ids)})


def test_key_share_is_the_mean_number_of_rows_sharing_a_rows_key() -> None:
    assert key_share(local_rows([i % 50 for i in range(200)]), ["driver_id"]) == 4.0
    # One hot driver: 90 of 100 rows share it, so most rows share their key with 90.
    assert key_share(local_rows([7] * 90 + list(range(10, 20))), ["driver_id"]) == 81.1
    assert key_share(local_rows([1, 2, 3]), []) == 3.0  # no keys: every row meets every row


def test_auto_broadcasts_small_local_rows_when_every_view_has_keys_and_a_ttl() -> None:
    four_per_key = local_rows([i % 50 for i in range(200)])
    assert choose_strategy("auto", [view(), view(ttl_micros=1)], four_per_key) == "broadcast"


@pytest.mark.parametrize(
    ("why", "views", "rows"),
    [
        ("a hot key: 10 rows of one driver", [view()], local_rows([7] * 10 + [1, 2])),
        ("five rows per driver", [view()], local_rows([i % 20 for i in range(100)])),
        ("a view without TTL", [view(), view(ttl_micros=0)], local_rows([1, 2])),
        ("a view without entities", [view(), view(keys=())], local_rows([1, 2])),
        ("rows that are not local (a Spark DataFrame, SQL, a path)", [view()], None),
        ("no entity rows", [view()], local_rows([])),
    ],
)
def test_auto_keeps_the_window_plan_where_broadcast_work_is_unbounded(
    why: str, views: list[SparkView], rows: pa.Table | None
) -> None:
    assert choose_strategy("auto", views, rows) == "window", why


def test_auto_keeps_the_window_plan_past_the_row_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spark_pairs, "MAX_ENTITY_ROWS", 10)
    assert choose_strategy("auto", [view()], local_rows(list(range(11)))) == "window"
    assert choose_strategy("auto", [view()], local_rows(list(range(10)))) == "broadcast"


def test_a_configured_strategy_is_used_as_it_is() -> None:
    hot = local_rows([7] * 100)
    assert choose_strategy("broadcast", [view(ttl_micros=0)], hot) == "broadcast"
    assert choose_strategy("window", [view()], local_rows([1])) == "window"


def _write_data(data: Path, rng: np.random.Generator) -> pd.DataFrame:
    """Feature rows of DRIVERS drivers over 10 days (minute grid: event-time ties broken by
    created time, 5% null rates), and entity rows (some drivers without rows, duplicates)."""
    n = 20_000
    event = T0.timestamp() * 1e6 + rng.integers(0, 10 * 1440, n) * 60_000_000
    pq.write_table(
        pa.table(
            {
                "driver_id": pa.array(rng.integers(0, DRIVERS, n), pa.int64()),
                "event_timestamp": pa.array(event.astype(np.int64), pa.timestamp("us", tz="UTC")),
                "created": pa.array(
                    (event + rng.integers(0, 3, n) * 1_000_000).astype(np.int64),
                    pa.timestamp("us", tz="UTC"),
                ),
                "rate": pa.array(rng.random(n), mask=rng.random(n) < 0.05),
                "trips": pa.array(rng.integers(0, 100, n), pa.int64()),
            }
        ),
        data / "stats.parquet",
        row_group_size=5_000,
    )
    rows = 2_000
    ids = rng.integers(0, DRIVERS + 100, rows)
    ids[:100] = ids[100:200]  # duplicate entity rows
    ts = T0.timestamp() + rng.integers(-86_400, 11 * 86_400, rows)
    return pd.DataFrame(
        {
            "driver_id": ids,
            "event_timestamp": pd.to_datetime(ts, unit="s", utc=True),
            "label": rng.integers(0, 2, rows),
        }
    )


def _objects(ttl: timedelta) -> list[Any]:
    source = FileSource(
        name="stats_src",
        path="data/stats.parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    views = [
        FeatureView(
            name=name,
            entities=[DRIVER],
            ttl=ttl * (i + 1),
            schema=[Field(name="rate", dtype=Float64), Field(name="trips", dtype=Int64)],
            source=source,
        )
        for i, name in enumerate(("stats", "stats_week"))
    ]
    return [DRIVER, source, *views]


@pytest.fixture(scope="module")
def user_like(
    tmp_path_factory: pytest.TempPathFactory, spark: Any
) -> tuple[FeatureStore, FeatureStore, pd.DataFrame]:
    """(DuckDB store, Spark store, entity rows) over the same data."""
    duck_root = tmp_path_factory.mktemp("strategy_duck")
    (duck_root / "data").mkdir()
    entities = _write_data(duck_root / "data", np.random.default_rng(5))
    duck = make_store(duck_root, _objects(timedelta(days=1)))
    spark_root = tmp_path_factory.mktemp("strategy_spark")
    (spark_root / "data").symlink_to(duck_root / "data")
    spark_store = make_store(spark_root, _objects(timedelta(days=1)), offline_store=SPARK_STORE)
    return duck, spark_store, entities


FEATURES = ["stats:rate", "stats:trips", "stats_week:rate", "stats_week:trips"]


def _plan(frame: Any, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    frame.explain()
    return capsys.readouterr().out


def test_auto_broadcasts_a_user_shaped_training_set_and_equals_duckdb(
    user_like: tuple[FeatureStore, FeatureStore, pd.DataFrame],
    capsys: pytest.CaptureFixture[str],
) -> None:
    duck, spark_store, entities = user_like
    assert 1 < key_share(pa.Table.from_pandas(entities), ["driver_id"]) <= 4
    expected = (
        duck.get_historical_features(entity_df=entities, features=FEATURES, full_feature_names=True)
        .to_arrow()
        .to_pylist()
    )
    job = spark_store.get_historical_features(
        entity_df=entities, features=FEATURES, full_feature_names=True
    )
    plan = _plan(job.to_spark_df(), capsys)
    # The feature rows meet the broadcast entity rows where they are read: no window over them.
    assert "BroadcastHashJoin" in plan
    assert "Window" not in plan
    # Each output partition is sorted once: the aggregate's order (partition, row id) is the
    # input order, so the final sort is the aggregate's own and no second pass is planned.
    assert plan.count("Sort [") == 1, plan
    got = job.to_arrow().to_pylist()
    assert got == expected
    hits = sum(row["stats__rate"] is not None for row in got)
    assert 0 < hits < len(got)  # matches, misses past the TTL and null values all occur


def test_the_window_plan_gives_the_same_rows(
    user_like: tuple[FeatureStore, FeatureStore, pd.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    duck, spark_store, entities = user_like
    monkeypatch.setattr(spark_store.config.offline_store, "join_strategy", "window")
    job = spark_store.get_historical_features(
        entity_df=entities, features=FEATURES, full_feature_names=True
    )
    plan = _plan(job.to_spark_df(), capsys)
    assert "Window" in plan
    assert "BroadcastHashJoin" not in plan
    expected = duck.get_historical_features(
        entity_df=entities, features=FEATURES, full_feature_names=True
    )
    assert job.to_arrow().to_pylist() == expected.to_arrow().to_pylist()
