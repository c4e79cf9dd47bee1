"""Engine behaviour around failures: errors surface, no interval is recorded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
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
