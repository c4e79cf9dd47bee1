"""The Kubeflow pipeline run with ``kfp.local`` against a live ``featurestore serve --auth``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest
from kfp import local
from mlflow.tracking import MlflowClient

from offline_store.saved import fingerprint, list_training_datasets
from offline_store.sdk import get_training_dataset
from pipelines.config import resolve_config
from pipelines.kubeflow.pipeline import COMPILED, compile_pipeline, ride_ranking_pipeline
from pipelines.lineage import DIGEST_LENGTH, load_run_dataset, run_lineage
from tests.service.conftest import ROOT, Repo, ServeProcess


@pytest.fixture(scope="module")
def api_key(training_repo: Repo) -> str:
    env = {**os.environ, "FEATURESTORE_REGISTRY_URL": training_repo.registry_url}
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "keys", "create", "--scope", "read",
         "--name", "kubeflow", "--repo", str(training_repo.path)],
        env=env, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.fixture(scope="module")
def served(training_repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    server = ServeProcess(training_repo, log, "--auth")
    yield server.url
    server.stop()


@pytest.fixture
def kfp_local(tmp_path: Path, training_repo: Repo, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The components run as subprocesses of this one and inherit its environment, as a
    # Kubernetes step would get the registry URL and the key from secrets.
    monkeypatch.setenv("FEATURESTORE_REGISTRY_URL", training_repo.registry_url)
    monkeypatch.setenv("FEATURESTORE_REDIS_URL", training_repo.redis_url)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    return tmp_path


def test_compiled_pipeline_yaml_is_current(tmp_path: Path) -> None:
    fresh = compile_pipeline(tmp_path / "ride_ranking.yaml")
    assert fresh.read_text() == COMPILED.read_text(), "run `make pipelines-compile`"


def test_pipeline_trains_on_a_saved_dataset_mlflow_can_lead_back_to(
    kfp_local: Path,
    training_repo: Repo,
    served: str,
    api_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FEATURESTORE_API_KEY", api_key)
    tracking = f"sqlite:///{kfp_local / 'mlflow.db'}"
    trips = training_repo.path / "data" / "trips.parquet"

    auc = ride_ranking_pipeline(
        service_url=served,
        repo_path=str(training_repo.path),
        entity_path=str(trips),
        mlflow_tracking_uri=tracking,
        dataset_name="kfp_rides",
    ).output

    [saved] = list_training_datasets("kfp_rides", repo_path=training_repo.path)
    assert saved.entity_fingerprint == fingerprint(pq.read_table(trips))
    client = MlflowClient(tracking)
    [experiment] = [e for e in client.search_experiments() if e.name == "ride_ranking"]
    [run] = client.search_runs([experiment.experiment_id])
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == saved.entity_fingerprint[:DIGEST_LENGTH]
    profile = json.loads(dataset_input.dataset.profile)
    assert profile["num_rows"] == saved.row_count == training_repo.table("trips").num_rows
    assert profile["features"] == saved.features
    assert profile["min_event_timestamp"] == saved.min_event_timestamp.isoformat()
    [lineage] = run_lineage(run.info.run_id, tracking_uri=tracking)
    assert (lineage.name, lineage.version, lineage.service_url) == ("kfp_rides", 1, served)

    # The model learned: clearly better than predicting the base rate for every trip.
    metrics = run.data.metrics
    assert metrics["test_baseline_auc"] == 0.5
    assert auc == metrics["test_auc"] > 0.65
    assert metrics["test_log_loss"] < metrics["test_baseline_log_loss"]

    record, frame = load_run_dataset(
        run.info.run_id, resolve_config({"repo_path": str(training_repo.path)}),
        tracking_uri=tracking,
    )  # fmt: skip
    assert record == saved
    with httpx.Client(base_url=served, headers={"Authorization": f"Bearer {api_key}"}) as http:
        served_again = get_training_dataset(
            str(trips), feature_service="ride_ranking_v1", url=served, http_client=http
        )
    assert isinstance(served_again, pd.DataFrame)
    pd.testing.assert_frame_equal(frame, served_again)
    # The same rows the SDK builds in-process (the service orders the driver columns
    # differently, so compare by name).
    direct = get_training_dataset(
        str(trips), feature_service="ride_ranking_v1", repo_path=training_repo.path
    )
    assert isinstance(direct, pd.DataFrame)
    pd.testing.assert_frame_equal(frame, direct[list(frame.columns)])


def test_pipeline_without_an_api_key_fails_at_the_training_set_step(
    kfp_local: Path,
    training_repo: Repo,
    served: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FEATURESTORE_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="build-training-set"):
        ride_ranking_pipeline(
            service_url=served,
            repo_path=str(training_repo.path),
            entity_path=str(training_repo.path / "data" / "trips.parquet"),
            mlflow_tracking_uri=f"sqlite:///{kfp_local / 'mlflow.db'}",
            dataset_name="kfp_no_key",
        )
    assert list_training_datasets("kfp_no_key", repo_path=training_repo.path) == []
