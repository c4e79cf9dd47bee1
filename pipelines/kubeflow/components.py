"""The pipeline's three lightweight components.

kfp ships each function's source to the step's container, so each body imports what it
uses. The container is ``PIPELINES_IMAGE`` (``pipelines/Dockerfile``: this project plus
``pipelines/requirements.txt``); the feature repo is baked in at ``/app/feature_repo`` and
the registry URL and API key arrive as environment variables (Kubernetes secrets), never as
pipeline parameters, which Kubeflow stores in the clear. ``kfp.local.SubprocessRunner`` runs
the same components in the current environment.
"""

# No ``from __future__ import annotations`` here: kfp reads the parameter annotations as
# types to build each component's interface.
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

PIPELINES_IMAGE = "featurestore-pipelines-python:0.1.0"


@dsl.component(base_image=PIPELINES_IMAGE)
def build_training_set(
    service_url: str,
    repo_path: str,
    entity_path: str,
    feature_service: str,
    dataset_name: str,
    api_key_env: str,
    training_set: Output[Dataset],
) -> NamedTuple(  # type: ignore[valid-type]  # kfp's spelling of named outputs
    "BuiltDataset", [("name", str), ("version", int), ("fingerprint", str)]
):
    """Ask the service for a point-in-time training set and save it as the next version."""
    import os
    import shutil

    import pyarrow.parquet as pq

    from pipelines.config import resolve_config
    from pipelines.training import fetch_and_save

    config = resolve_config({"repo_path": repo_path})
    record = fetch_and_save(
        config,
        pq.read_table(entity_path),
        name=dataset_name,
        url=service_url,
        api_key=os.environ.get(api_key_env) or None,
        feature_service=feature_service,
    )
    shutil.copyfile(record.storage_path, training_set.path)
    training_set.metadata.update(
        {"name": record.name, "version": record.version, "rows": record.row_count}
    )
    return (record.name, record.version, record.entity_fingerprint)


@dsl.component(base_image=PIPELINES_IMAGE)
def train(
    training_set: Input[Dataset],
    repo_path: str,
    service_url: str,
    dataset_name: str,
    dataset_version: int,
    mlflow_tracking_uri: str,
    mlflow_experiment: str,
    model: Output[Model],
) -> str:
    """Fit the ride-ranking model, with the dataset logged as the MLflow run's input."""
    import joblib
    import mlflow
    import pandas as pd

    from offline_store.saved import get_saved_dataset
    from pipelines import ride_ranking
    from pipelines.config import resolve_config, store_environment
    from pipelines.lineage import log_training_dataset
    from pipelines.materialize import open_store

    config = resolve_config({"repo_path": repo_path})
    with store_environment(config):
        record = get_saved_dataset(dataset_name, dataset_version, store=open_store(config))
    frame = pd.read_parquet(training_set.path)
    mlflow.set_tracking_uri(mlflow_tracking_uri)
    mlflow.set_experiment(mlflow_experiment)
    with mlflow.start_run(run_name=f"ride-ranking on {dataset_name} v{dataset_version}") as run:
        log_training_dataset(record, service_url=service_url, registry_url=config.registry_url)
        fitted = ride_ranking.train(frame)
        parts = ride_ranking.split(frame)
        mlflow.log_params(
            {
                "model": "HistGradientBoostingClassifier",
                "train_rows": len(parts.train),
                "train_until": parts.train_until.isoformat(),
                "validation_until": parts.validation_until.isoformat(),
            }
        )
        joblib.dump(fitted, model.path)
        return str(run.info.run_id)


@dsl.component(base_image=PIPELINES_IMAGE)
def evaluate(
    training_set: Input[Dataset],
    model: Input[Model],
    run_id: str,
    mlflow_tracking_uri: str,
    metrics: Output[Metrics],
) -> float:
    """Score the model against the constant baseline on the later, held-out trips."""
    import joblib
    import mlflow
    import pandas as pd

    from pipelines import ride_ranking

    scores = ride_ranking.evaluate(joblib.load(model.path), pd.read_parquet(training_set.path))
    for key, value in scores.to_dict().items():
        metrics.log_metric(key, value)
    mlflow.set_tracking_uri(mlflow_tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"test_{k}": v for k, v in scores.to_dict().items()})
    return scores.auc
