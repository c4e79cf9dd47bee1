"""A push-sourced store over a Parquet file, shared by the offline write tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from feast import FeatureStore, FeatureView, Field, FileSource, PushSource
from feast.types import Float64, Int64

from tests.offline_store.repo_helpers import DRIVER, make_store

T0 = datetime(2024, 7, 1, tzinfo=UTC)


EXISTING = [{"driver_id": 1, "event_timestamp": T0, "created": T0, "rate": 0.1, "trips": 1}]


def push_store(root: Path, path: str) -> FeatureStore:
    source = FileSource(
        name="driver_src",
        path=path,
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    push = PushSource(name="driver_push", batch_source=source)
    view = FeatureView(
        name="driver_fv",
        entities=[DRIVER],
        ttl=timedelta(days=1),
        schema=[Field(name="rate", dtype=Float64), Field(name="trips", dtype=Int64)],
        source=push,
    )
    return make_store(root, [DRIVER, source, push, view])


def latest_rate(fs: FeatureStore) -> Any:
    entities = pd.DataFrame({"driver_id": [1], "event_timestamp": [T0 + timedelta(hours=1)]})
    return fs.get_historical_features(entity_df=entities, features=["driver_fv:rate"]).to_df()[
        "rate"
    ][0]
