"""The ride-hailing example repo (feature_repo/) on our offline store, against the reference.

Its own generator writes the data (with nulls and same-event-time corrections); its trips
table is the entity source, given as a Parquet path; the feature service includes three views
with different keys and TTLs (one unlimited) and an on-demand view over request data.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import Entity, FeatureService, FeatureStore, FeatureView
from feast.data_source import DataSource
from feast.on_demand_feature_view import OnDemandFeatureView

from offline_store.sdk import get_training_dataset
from tests.offline_store.reference import RefView, reference_pit
from tests.offline_store.repo_helpers import write_repo_yaml

ROOT = Path(__file__).resolve().parents[2]
END = datetime(2026, 11, 1, tzinfo=UTC)
DRIVER_FEATURES = [
    "conv_rate",
    "acc_rate",
    "avg_daily_trips",
    "avg_rating",
    "surge_multiplier",
    "is_active",
]


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    root = tmp_path_factory.mktemp("example")
    shutil.copy(ROOT / "feature_repo" / "definitions.py", root / "definitions.py")
    write_repo_yaml(root)
    generator = _load(ROOT / "feature_repo" / "generate.py", "_example_generate")
    generator.generate(root / "data", rows=3000, seed=5, end=END)
    definitions = _load(root / "definitions.py", "_example_definitions")
    kinds = (Entity, DataSource, FeatureView, OnDemandFeatureView, FeatureService)
    objects = [o for o in vars(definitions).values() if isinstance(o, kinds)]
    store = FeatureStore(repo_path=str(root))
    store.apply(objects)
    return store


def _rows(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()  # type: ignore[no-any-return]


def test_feature_service_matches_the_reference_with_odfv(example: FeatureStore) -> None:
    data = Path(example.repo_path) / "data"
    result = get_training_dataset(
        str(data / "trips.parquet"),
        feature_service="ride_ranking_v1",
        store=example,
        output="arrow",
    )
    assert isinstance(result, pa.Table)
    got = result.to_pylist()
    trips = _rows(data / "trips.parquet")
    views = [
        RefView(
            ("driver_id",),
            timedelta(days=1),
            "event_timestamp",
            "created",
            # The on-demand view reads the whole driver view, so Feast requests all of it.
            {f: f for f in DRIVER_FEATURES},
            _rows(data / "driver_stats.parquet"),
        ),
        RefView(
            ("customer_id",),
            timedelta(0),
            "event_timestamp",
            "created",
            {"avg_passenger_rating": "avg_passenger_rating", "membership_tier": "membership_tier"},
            _rows(data / "customer_profile.parquet"),
        ),
        RefView(
            ("driver_id", "customer_id"),
            timedelta(days=30),
            "event_timestamp",
            "created",
            {
                "trips_together": "trips_together",
                "avg_tip": "avg_tip",
                "last_rating": "last_rating",
            },
            _rows(data / "driver_customer_stats.parquet"),
        ),
    ]
    expected = reference_pit(trips, views, "event_timestamp")

    assert len(got) == len(trips) > 100
    matched = 0
    for mine, ref in zip(got, expected, strict=True):
        fare = mine.pop("estimated_fare")
        surge = ref["surge_multiplier"] if ref["surge_multiplier"] is not None else 1.0
        want = (2.5 + 1.2 * ref["distance_km"] + 0.3 * ref["duration_min"]) * surge
        assert math.isclose(fare, want, rel_tol=1e-9)
        assert mine == ref
        matched += ref["conv_rate"] is not None
    # The data must exercise both matches and misses for this to mean something.
    assert 0 < matched < len(got)
