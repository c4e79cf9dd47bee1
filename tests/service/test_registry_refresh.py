"""Registry refreshes: what `feast apply` changed is what the service reads next."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import feast
from feast import FeatureView, Field, FileSource
from feast.types import Float64

from foundation.registry import FeatureStore
from service.catalog import load_snapshot
from tests.offline_store.repo_helpers import DRIVER, write_repo_yaml


def _view(ttl_minutes: int) -> FeatureView:
    source = FileSource(
        name="driver_src", path="data/driver.parquet", timestamp_field="event_timestamp"
    )
    return FeatureView(
        name="driver_fv",
        entities=[DRIVER],
        ttl=timedelta(minutes=ttl_minutes),
        schema=[Field(name="rate", dtype=Float64)],
        source=source,
    )


def test_every_apply_is_read_back_by_the_next_refresh(tmp_path: Path) -> None:
    # The service's store refreshes on a timer, mostly finding nothing new, while
    # `feast apply` (another store on the same registry) changes a view's TTL now and then.
    # Feast memoizes lookups per snapshot object id; a new snapshot that reuses a freed
    # one's id must not be answered with the old snapshot's views.
    (tmp_path / "data").mkdir()
    write_repo_yaml(tmp_path)
    writer = feast.FeatureStore(repo_path=str(tmp_path))
    writer.apply([DRIVER, _view(1)])
    service_store = FeatureStore(repo_path=str(tmp_path))
    snapshot = load_snapshot(service_store, previous=None)
    stale = []
    for ttl in range(2, 62):
        for _ in range(ttl % 3):
            unchanged = load_snapshot(service_store, previous=snapshot)
            assert unchanged is snapshot  # nothing changed: compiled plans survive
        writer.apply([_view(ttl)])
        snapshot = load_snapshot(service_store, previous=snapshot)
        cached = service_store.registry.get_any_feature_view(
            "driver_fv", service_store.project, allow_cache=True
        )
        seen = (
            snapshot.views["driver_fv"].ttl_seconds // 60,
            int(cached.ttl.total_seconds()) // 60,
        )
        if seen != (ttl, ttl):
            stale.append((ttl, seen))
    assert stale == []


def test_a_store_opened_on_an_empty_registry_sees_the_first_apply(tmp_path: Path) -> None:
    # cache_ttl_seconds is 0 here (never expires): Feast reloads only a snapshot that is
    # still empty, so the empty registry's snapshot must stay recognisably empty.
    (tmp_path / "data").mkdir()
    write_repo_yaml(tmp_path)
    store = FeatureStore(repo_path=str(tmp_path))
    assert store.list_feature_views(allow_cache=True) == []
    feast.FeatureStore(repo_path=str(tmp_path)).apply([DRIVER, _view(5)])
    assert [v.name for v in store.list_feature_views(allow_cache=True)] == ["driver_fv"]
