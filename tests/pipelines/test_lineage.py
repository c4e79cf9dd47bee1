"""MLflow lineage records refuse to be lost: no run, no dataset, or a rewritten catalog."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pytest

from foundation.errors import InvalidRequestError, NotFoundError
from offline_store.datasets import SavedDataset
from pipelines.lineage import DIGEST_LENGTH, log_training_dataset, run_lineage

RECORD = SavedDataset(
    project="rides",
    name="rides",
    version=3,
    features=["driver_hourly_stats:conv_rate"],
    feature_service=None,
    full_feature_names=False,
    entity_fingerprint="ab" * 32,
    row_count=12,
    min_event_timestamp=datetime(2026, 11, 1, tzinfo=UTC),
    max_event_timestamp=datetime(2026, 11, 2, tzinfo=UTC),
    storage_path="/nowhere.parquet",
    created_at=datetime(2026, 11, 3, tzinfo=UTC),
)


@pytest.fixture
def tracking(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    # MLflow remembers the last experiment id process-wide; this database has its own.
    mlflow.set_experiment("lineage")
    return uri


def test_logging_needs_an_active_run(tracking: str) -> None:
    with pytest.raises(InvalidRequestError, match="no active MLflow run"):
        log_training_dataset(RECORD)


def test_logged_source_keeps_the_full_fingerprint_and_hides_the_password(tracking: str) -> None:
    with mlflow.start_run() as run:
        log_training_dataset(RECORD, registry_url="postgresql+psycopg://fs:s3cret@db:5432/features")
    [lineage] = run_lineage(run.info.run_id, tracking_uri=tracking)
    assert lineage.fingerprint == RECORD.entity_fingerprint
    assert lineage.uri == "featurestore://rides/training-datasets/rides/versions/3"
    assert lineage.registry is not None
    assert "s3cret" not in lineage.registry
    [item] = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    assert item.dataset.digest == RECORD.entity_fingerprint[:DIGEST_LENGTH]
    assert "s3cret" not in item.dataset.source
    assert json.loads(item.dataset.profile)["max_event_timestamp"] == "2026-11-02T00:00:00+00:00"
    assert {t.key: t.value for t in item.tags}["featurestore.version"] == "3"


def test_a_run_without_a_featurestore_dataset_has_no_lineage(tracking: str) -> None:
    with mlflow.start_run() as run:
        mlflow.log_param("alpha", 1)
    with pytest.raises(NotFoundError, match="no featurestore training dataset"):
        run_lineage(run.info.run_id, tracking_uri=tracking)
