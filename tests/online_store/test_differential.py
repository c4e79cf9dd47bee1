"""Stock Feast (redis store + local engine) is the oracle: same data, separate Redis DBs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from feast import FeatureStore

from online_store.keys import entity_key_prefix
from online_store.reader import NOT_FOUND, ReadPlan, ViewReadSpec
from tests.online_store.conftest import snapshot
from tests.online_store.data import T0, typed_objects, write_typed_parquet
from tests.online_store.feast_repo import RepoSpec, make_store, open_store

DUCKDB = "offline_store.store.DuckDBParquetOfflineStore"
START = T0 - timedelta(days=1)
END = T0 + timedelta(days=20)
VIEWS = ("typed", "by_rider", "by_zone", "by_device", "pair")


class World:
    """One data set materialized by stock Feast (db 0) and by us (db 1: Feast's file offline
    store, the engine's fallback path, one view only because dask is slow; db 2: DuckDB)."""

    def __init__(self, root: Path, base_url: str) -> None:
        self.root = root
        self.base = base_url
        self.parquet = root / "data" / "typed.parquet"
        self.table = write_typed_parquet(self.parquet, n=4000, entities=600, seed=7)
        self.objects = typed_objects(self.parquet)
        self.stock = make_store(
            root / "stock", RepoSpec("p", base_url + "0", False, False), self.objects
        )
        self.ours = make_store(
            root / "ours", RepoSpec("p", base_url + "1", True, True), self.objects
        )
        self.ours_duck = make_store(
            root / "duck", RepoSpec("p", base_url + "2", True, True, offline=DUCKDB), self.objects
        )
        for store in (self.stock, self.ours_duck):
            store.materialize(START, END)
        self.ours.materialize(START, END, feature_views=["typed"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, module_redis: str) -> World:
    return World(tmp_path_factory.mktemp("world"), module_redis)


def test_materialize_writes_same_keys_and_bytes_as_stock(world: World) -> None:
    stock = snapshot(world.base + "0")
    ours = snapshot(world.base + "2")
    assert len(stock) > 1000
    assert ours.keys() == stock.keys()
    assert ours == stock


def test_engine_fallback_on_feast_file_offline_store_matches_stock(world: World) -> None:
    prefix = entity_key_prefix(["driver_id"])
    stock = {k: v for k, v in snapshot(world.base + "0").items() if k.startswith(prefix)}
    assert len(stock) > 500
    assert snapshot(world.base + "1") == stock


def _feature_refs(store: FeatureStore) -> list[str]:
    return [f"{v.name}:{f.name}" for v in store.list_feature_views() for f in v.features]


def _entity_rows(extra_missing: bool = True) -> list[dict[str, Any]]:
    rows = []
    for i in [0, 1, 5, 17, 599, 123456]:
        rows.append(
            {"driver_id": i, "rider_id": f"r{i}", "zone": i % 1000, "device": i.to_bytes(4, "big")}
        )
    return rows


def _online(store: FeatureStore, refs: list[str]) -> dict[str, list[Any]]:
    return store.get_online_features(refs, _entity_rows(), full_feature_names=True).to_dict()


def test_stock_get_online_features_reads_our_writes_like_its_own(
    world: World, tmp_path: Path
) -> None:
    # Stock Feast over our registry and our Redis DB.
    stock_over_ours = open_store(
        tmp_path / "stock_over_ours",
        RepoSpec(
            "p", world.base + "2", False, False, registry_path=world.root / "duck" / "registry.db"
        ),
    )
    refs = _feature_refs(world.stock)
    expected = _online(world.stock, refs)
    assert _online(stock_over_ours, refs) == expected
    assert any(v is not None for v in expected["typed__f_str"])


def test_our_plugin_serves_get_online_features_with_stock_values(world: World) -> None:
    refs = _feature_refs(world.stock)
    expected = _online(world.stock, refs)
    assert _online(world.ours_duck, refs) == expected


def test_our_plugin_reports_missing_entity_as_not_found(world: World) -> None:
    response = world.ours_duck.get_online_features(["typed:f_f64"], [{"driver_id": 10**9}])
    proto = response.proto
    assert proto.results[1].statuses[0] == 3  # FieldStatus.NOT_FOUND


def _plan(store: FeatureStore) -> ReadPlan:
    specs = []
    for view in store.list_feature_views():
        cols = view.entity_columns
        specs.append(
            ViewReadSpec(
                view.name,
                tuple(c.name for c in cols),
                tuple(c.dtype.to_value_type() for c in cols),
                tuple(f.name for f in view.features),
                0,
            )
        )
    return ReadPlan.compile("p", specs)


def test_our_reader_reads_stock_writes(world: World) -> None:
    plan = _plan(world.stock)
    rows = _entity_rows()
    entities = {k: [r[k] for r in rows] for k in rows[0]}
    on_stock = plan.read(redis.Redis.from_url(world.base + "0"), entities)
    on_ours = plan.read(redis.Redis.from_url(world.base + "2"), entities)
    assert on_stock == on_ours
    assert on_stock.columns["typed:f_f64"].statuses[-1] == NOT_FOUND
    assert on_stock.columns["pair:l_str"].statuses[0] != NOT_FOUND


def _materialize_into(
    world: World, tmp_path: Path, db: int, steps: Callable[[FeatureStore], None]
) -> dict[bytes, dict[bytes, bytes]]:
    client = redis.Redis.from_url(world.base + str(db))
    client.flushdb()
    spec = RepoSpec("p", world.base + str(db), True, True, offline=DUCKDB)
    store = make_store(tmp_path / f"repo{db}", spec, world.objects)
    steps(store)
    return snapshot(world.base + str(db))


def test_incremental_twice_equals_once_and_records_interval(world: World, tmp_path: Path) -> None:
    def twice(store: FeatureStore) -> None:
        store.materialize(START, T0 + timedelta(days=3))
        store.materialize_incremental(END)
        store.materialize_incremental(END)
        view = store.get_feature_view("typed")
        assert view.materialization_intervals
        assert view.materialization_intervals[-1][1] == END

    assert _materialize_into(world, tmp_path, 3, twice) == snapshot(world.base + "0")


def test_older_window_after_newer_leaves_newer_values(world: World, tmp_path: Path) -> None:
    middle = T0 + timedelta(days=5)

    def newer_then_older(store: FeatureStore) -> None:
        store.materialize(middle, END)
        store.materialize(START, middle)

    assert _materialize_into(world, tmp_path, 4, newer_then_older) == snapshot(world.base + "0")
