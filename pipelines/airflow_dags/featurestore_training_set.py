"""Build a saved, versioned training dataset for a feature service, and record its lineage.

The first task runs the entity query through the SDK's saved datasets (point-in-time join in
the worker, Parquet under ``<repo>/data/training/<name>/``, a new version in the registry's
catalog) and returns ``{"name", "version", "fingerprint", ...}`` as its result for downstream
DAGs. The second logs that dataset into an MLflow run as a dataset input (when an MLflow
tracking URI is set: the ``mlflow_tracking_uri`` param or ``MLFLOW_TRACKING_URI``).

``entity_query`` is SQL over the offline data (feature views and their sources are visible
by name; this runs in the worker with the SDK's full power, so ``read_parquet`` works);
``{repo_path}`` in it is replaced by the repo directory. The store is found as in the
materialization DAG. The schedule is ``FEATURESTORE_TRAINING_SCHEDULE`` (default: none,
triggered by hand or by another DAG).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

DAG_ID = "featurestore_training_set"
SCHEDULE = os.environ.get("FEATURESTORE_TRAINING_SCHEDULE") or None
DEFAULT_QUERY = (
    "SELECT driver_id, customer_id, event_timestamp, distance_km, duration_min, accepted "
    "FROM read_parquet('{repo_path}/data/trips.parquet')"
)


@dag(
    dag_id=DAG_ID,
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
    },
    params={
        "repo_path": Param(None, type=["null", "string"], description="Feast repo directory"),
        "registry_url": Param(None, type=["null", "string"], description="SQL registry URL"),
        "redis_url": Param(None, type=["null", "string"], description="online store Redis"),
        "connection_id": Param(
            "featurestore_default", type=["null", "string"], description="connection with them"
        ),
        "feature_service": Param("ride_ranking_v1", type="string"),
        "dataset_name": Param("ride_ranking", type="string", minLength=1),
        "entity_query": Param(DEFAULT_QUERY, type="string", minLength=1),
        "mlflow_tracking_uri": Param(None, type=["null", "string"]),
        "mlflow_experiment": Param("ride_ranking", type="string"),
    },
    tags=["featurestore", "training"],
    doc_md=__doc__,
)
def featurestore_training_set() -> None:
    @task
    def build_training_set() -> dict[str, Any]:
        from pipelines.airflow_support import config_from_params
        from pipelines.training import save_dataset

        params = get_current_context()["params"]
        config = config_from_params(params)
        query = str(params["entity_query"]).replace("{repo_path}", str(config.repo_path))
        record = save_dataset(
            config, query, name=params["dataset_name"], feature_service=params["feature_service"]
        )
        return {
            "name": record.name,
            "version": record.version,
            "fingerprint": record.entity_fingerprint,
            "row_count": record.row_count,
            "storage_path": record.storage_path,
        }

    @task
    def record_lineage(dataset: dict[str, Any]) -> str | None:
        import logging

        from pipelines.airflow_support import config_from_params
        from pipelines.lineage import log_training_dataset
        from pipelines.materialize import open_store

        params = get_current_context()["params"]
        uri = params.get("mlflow_tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            logging.getLogger(__name__).info("no MLflow tracking URI set; lineage not logged")
            return None
        import mlflow

        from offline_store.saved import get_saved_dataset
        from pipelines.config import store_environment

        config = config_from_params(params)
        with store_environment(config):
            record = get_saved_dataset(
                dataset["name"], dataset["version"], store=open_store(config)
            )
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(params["mlflow_experiment"])
        with mlflow.start_run(run_name=f"{record.name}-v{record.version}") as run:
            log_training_dataset(record, registry_url=config.registry_url)
            return str(run.info.run_id)

    record_lineage(build_training_set())


training_set_dag = featurestore_training_set()
