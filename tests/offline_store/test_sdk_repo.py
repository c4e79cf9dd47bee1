"""The SDK opens a repo as the tooling does: in a fresh shell, with nothing exported."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from foundation.environment import REGISTRY_ENV
from offline_store.sdk import get_training_dataset
from tests.offline_store.repo_helpers import DRIVER_SCHEMA, make_store, three_views, write_rows

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def test_repo_path_works_with_the_registry_variable_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``feature_store.yaml`` reads ``${FEATURESTORE_REGISTRY_URL}``, as the example repo does;
    unset, the SDK uses the SQLite registry under ``<repo>/data/`` (plain Feast would
    fail on the unexpanded variable)."""
    root = tmp_path / "repo"
    store = make_store(root, three_views())
    write_rows(
        root / "data" / "driver.parquet",
        DRIVER_SCHEMA,
        [{"driver_id": 1, "event_timestamp": T0, "created": T0, "rate": 0.5, "trips": 3}],
    )
    entities = pd.DataFrame({"driver_id": [1, 2], "event_timestamp": [T0, T0]})
    expected = get_training_dataset(entities, ["driver_fv:rate"], store=store)
    (root / "registry.db").rename(root / "data" / "registry.db")
    yaml_path = root / "feature_store.yaml"
    yaml_path.write_text(
        yaml_path.read_text().replace(
            f"path: sqlite:///{root}/registry.db", "path: ${FEATURESTORE_REGISTRY_URL}"
        )
    )
    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    got = get_training_dataset(entities, ["driver_fv:rate"], repo_path=root)
    assert isinstance(got, pd.DataFrame)
    pd.testing.assert_frame_equal(got, expected)
    assert got["rate"].tolist()[0] == 0.5
