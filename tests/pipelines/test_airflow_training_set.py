"""The training-set DAG via ``dag.test()``: a saved dataset the SDK agrees with, and its lineage."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from airflow.utils.state import DagRunState
from mlflow.tracking import MlflowClient

from offline_store.saved import fingerprint, list_training_datasets
from offline_store.sdk import get_training_dataset
from pipelines.config import resolve_config
from pipelines.lineage import DIGEST_LENGTH, load_run_dataset
from tests.pipelines.conftest import store_connection
from tests.service.conftest import Repo


def test_training_set_dag_saves_a_versioned_dataset_matching_the_sdk(
    airflow_db: Path,
    training_repo: Repo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipelines.airflow_dags.featurestore_training_set import DEFAULT_QUERY, training_set_dag

    store_connection(monkeypatch, training_repo)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    name = "airflow_rides"

    run = training_set_dag.test(
        run_conf={
            "repo_path": str(training_repo.path),
            "dataset_name": name,
            "mlflow_tracking_uri": tracking,
        }
    )

    assert run.state == DagRunState.SUCCESS
    published = run.get_task_instance("build_training_set").xcom_pull(task_ids="build_training_set")
    run_id = run.get_task_instance("record_lineage").xcom_pull(task_ids="record_lineage")
    monkeypatch.setenv("FEATURESTORE_REGISTRY_URL", training_repo.registry_url)
    monkeypatch.setenv("FEATURESTORE_REDIS_URL", training_repo.redis_url)
    [saved] = list_training_datasets(name, repo_path=training_repo.path)
    query = DEFAULT_QUERY.replace("{repo_path}", str(training_repo.path))
    assert published["name"] == name
    assert published["version"] == saved.version == 1
    assert published["fingerprint"] == saved.entity_fingerprint == fingerprint(query)
    assert saved.feature_service == "ride_ranking_v1"

    expected = get_training_dataset(
        query, feature_service="ride_ranking_v1", repo_path=training_repo.path
    )
    assert isinstance(expected, pd.DataFrame)
    assert saved.row_count == len(expected) == pq_rows(training_repo)

    [dataset_input] = MlflowClient(tracking).get_run(run_id).inputs.dataset_inputs
    assert dataset_input.dataset.digest == saved.entity_fingerprint[:DIGEST_LENGTH]
    assert dataset_input.dataset.name == f"{name}@v1"
    record, frame = load_run_dataset(
        run_id, resolve_config({"repo_path": str(training_repo.path)}), tracking_uri=tracking
    )
    assert record == saved
    pd.testing.assert_frame_equal(frame, expected)


def pq_rows(repo: Repo) -> int:
    return repo.table("trips").num_rows
