"""Engine behaviour around failures: errors surface, no interval is recorded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import redis
import sqlalchemy as sa
import yaml
from feast import FeatureStore

from online_store.engine import prefetch
from tests.online_store.data import ALL_TYPES, typed_objects, write_typed_parquet
from tests.online_store.feast_repo import DUCKDB, RepoSpec, make_store, write_repo
from tests.online_store.views import T0, parquet_views


def test_prefetch_yields_in_order_then_raises_the_producer_error() -> None:
    def batches() -> Iterator[pa.RecordBatch]:
        for i in range(3):
            yield pa.record_batch({"x": [i]})
        raise OSError("parquet file vanished")

    seen: list[int] = []

    def consume() -> None:
        for batch in prefetch(batches()):
            seen.append(batch.column(0)[0].as_py())

    with pytest.raises(OSError, match="vanished"):
        consume()
    assert seen == [0, 1, 2]


def test_failed_pull_fails_materialize_and_records_no_interval(
    tmp_path: Path, redis_url: str
) -> None:
    missing = tmp_path / "missing.parquet"
    spec = RepoSpec("p", redis_url, True, True, offline=DUCKDB)
    store = make_store(tmp_path / "repo", spec, lambda: parquet_views(missing))
    with pytest.raises(Exception, match=r"missing\.parquet|No files found|does not exist"):
        store.materialize(T0 - timedelta(1), T0 + timedelta(1))
    assert not store.get_feature_view("a").materialization_intervals


def _sqlite_online(repo: Path) -> None:
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    config["online_store"] = {"type": "sqlite", "path": str(repo / "online.db")}
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config))


def test_engine_writes_feasts_own_online_stores_like_the_local_engine(
    tmp_path: Path, redis_url: str
) -> None:
    """With an online store other than ours (here Feast's SQLite store), the engine hands
    Feast's own row conversion the view's key types: what it stores reads back as the local
    engine's."""
    parquet = tmp_path / "typed.parquet"
    table = write_typed_parquet(parquet, n=300, entities=60, seed=5)
    stores = {}
    for name, spec in (
        ("ours", RepoSpec("p", redis_url, True, True, offline=DUCKDB)),
        ("local", RepoSpec("p", redis_url, True, False, offline=DUCKDB)),
    ):
        repo = write_repo(tmp_path / name, spec)
        _sqlite_online(repo)
        store = FeatureStore(repo_path=str(repo))
        store.apply(typed_objects(parquet)())
        store.materialize(T0 - timedelta(days=1), T0 + timedelta(days=20))
        stores[name] = store
    features = [f"typed:{name}" for name in ALL_TYPES] + ["by_rider:f_f64", "by_rider:f_str"]
    ids = sorted(set(table.column("driver_id").to_pylist()))
    entity_rows = [{"driver_id": i, "rider_id": f"r{i}"} for i in ids]
    answers = {
        name: store.get_online_features(features, entity_rows, full_feature_names=True).to_dict()
        for name, store in stores.items()
    }
    assert answers["ours"]["typed__f_i64"].count(None) < len(ids)  # values were stored
    assert answers["ours"] == answers["local"]


@pytest.mark.parametrize("named_by", ["source names", "mapped names"])
def test_timestamps_renamed_by_the_field_mapping_materialize_either_way(
    tmp_path: Path, module_redis: str, named_by: str
) -> None:
    """A source may name its timestamp columns by their names in the file or by the names
    its field mapping gives them: the same rows land in Redis, with the newest event time
    recorded for the freshness gauge."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Int64

    from online_store.freshness import FreshnessLog
    from tests.online_store.conftest import snapshot

    parquet = tmp_path / "renamed.parquet"
    pa_table = pa.table(
        {
            "drv": pa.array([1, 1, 2], pa.int64()),
            "ts_raw": pa.array([T0, T0, T0 + timedelta(hours=1)], pa.timestamp("us", tz="UTC")),
            # driver 1: two rows at the same event time; the later created one wins.
            "cr_raw": pa.array(
                [T0 + timedelta(days=2), T0 + timedelta(days=1), T0], pa.timestamp("us", tz="UTC")
            ),
            "v": pa.array([10, 11, 20], pa.int64()),
        }
    )
    import pyarrow.parquet as pq

    pq.write_table(pa_table, parquet)
    ts, created = ("ts_raw", "cr_raw") if named_by == "source names" else ("event_ts", "created")

    def objects() -> list[Any]:
        driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
        source = FileSource(
            name="renamed_src", path=str(parquet), timestamp_field=ts,
            created_timestamp_column=created,
            field_mapping={"drv": "driver_id", "ts_raw": "event_ts", "cr_raw": "created"},
        )  # fmt: skip
        view = FeatureView(
            name="renamed", entities=[driver], ttl=timedelta(0), source=source,
            schema=[Field(name="v", dtype=Int64)],
        )  # fmt: skip
        return [driver, source, view]

    url = module_redis + "7"
    redis.Redis.from_url(url).flushdb()
    store = make_store(tmp_path / "repo", RepoSpec("p", url, True, True, offline=DUCKDB), objects)
    store.materialize(T0 - timedelta(days=1), T0 + timedelta(days=1))
    answer = store.get_online_features(["renamed:v"], [{"driver_id": 1}, {"driver_id": 2}])
    assert answer.to_dict()["v"] == [10, 20]
    assert len(snapshot(url)) == 2
    registry = sa.create_engine(f"sqlite:///{tmp_path / 'repo' / 'registry.db'}")
    newest = FreshnessLog(registry, "p").newest_events()["renamed"]
    assert newest == T0 + timedelta(hours=1)
