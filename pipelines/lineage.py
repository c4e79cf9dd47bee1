"""MLflow lineage: which saved training dataset a run trained on, and the way back to it.

:func:`log_training_dataset` records a saved dataset in the active MLflow run as a dataset
input (``mlflow.log_input``): its name and version, our entity fingerprint as the digest,
the feature references, the entity time range, the row count, and where to fetch it again
(a ``featurestore://<project>/training-datasets/<name>/versions/<version>`` URI plus the
service URL and, password hidden, the registry). :func:`load_run_dataset` goes back: from a
run id to the exact rows, checked against the fingerprint the run recorded.

MLflow caps digests at 36 characters, so the digest is the first 36 hex digits of the
SHA-256 fingerprint; the full fingerprint travels in the source and the profile.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import mlflow
import pandas as pd
import sqlalchemy as sa
from mlflow.data.dataset import Dataset
from mlflow.data.dataset_source import DatasetSource
from mlflow.tracking import MlflowClient

from foundation.errors import ConflictError, InvalidRequestError, NotFoundError
from offline_store.datasets import SavedDataset
from offline_store.saved import get_saved_dataset, load_training_dataset
from pipelines.config import StoreConfig, store_environment
from pipelines.materialize import open_store

SOURCE_TYPE = "featurestore"
URI_SCHEME = "featurestore://"
DIGEST_LENGTH = 36  # mlflow.utils.validation.MAX_DATASET_DIGEST_SIZE


def dataset_uri(project: str, name: str, version: int) -> str:
    """The store-side address of one saved dataset version."""
    return f"{URI_SCHEME}{project}/training-datasets/{name}/versions/{version}"


def _hide_password(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return None


@dataclass(frozen=True, slots=True)
class DatasetLineage:
    """What a run recorded about its training dataset (the MLflow source, parsed).

    Attributes:
        project: the Feast project.
        name: the saved dataset's name.
        version: its version.
        fingerprint: the full SHA-256 entity fingerprint.
        uri: ``featurestore://...`` address of the dataset.
        service_url: the featurestore service the rows came from, if any.
        registry: the registry URL (password hidden), if known.
    """

    project: str
    name: str
    version: int
    fingerprint: str
    uri: str
    service_url: str | None = None
    registry: str | None = None


class FeatureStoreDatasetSource(DatasetSource):  # type: ignore[misc]
    """An MLflow dataset source pointing at one saved dataset version in our store."""

    def __init__(self, lineage: DatasetLineage) -> None:
        self.lineage = lineage

    @staticmethod
    def _get_source_type() -> str:
        return SOURCE_TYPE

    def load(self) -> Any:
        """Not loadable on its own: it needs the store; use :func:`load_run_dataset`."""
        raise InvalidRequestError(
            "a featurestore dataset source needs its store to load; call "
            "pipelines.lineage.load_run_dataset(run_id, config)"
        )

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False  # built from a SavedDataset, never from a bare string

    @classmethod
    def _resolve(cls, raw_source: Any) -> FeatureStoreDatasetSource:
        raise InvalidRequestError(f"cannot resolve {raw_source!r} as a featurestore source")

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.lineage.uri,
            "project": self.lineage.project,
            "name": self.lineage.name,
            "version": self.lineage.version,
            "fingerprint": self.lineage.fingerprint,
            "service_url": self.lineage.service_url,
            "registry": self.lineage.registry,
        }

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> FeatureStoreDatasetSource:
        return cls(
            DatasetLineage(
                project=str(source_dict["project"]),
                name=str(source_dict["name"]),
                version=int(source_dict["version"]),
                fingerprint=str(source_dict["fingerprint"]),
                uri=str(source_dict["uri"]),
                service_url=source_dict.get("service_url"),
                registry=source_dict.get("registry"),
            )
        )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class TrainingDataset(Dataset):  # type: ignore[misc]
    """A saved training dataset as an MLflow dataset (metadata only; the rows stay with us)."""

    def __init__(self, record: SavedDataset, source: FeatureStoreDatasetSource) -> None:
        self.record = record
        super().__init__(
            source=source,
            name=f"{record.name}@v{record.version}",
            digest=record.entity_fingerprint[:DIGEST_LENGTH],
        )

    def _compute_digest(self) -> str:
        return self.record.entity_fingerprint[:DIGEST_LENGTH]

    def to_dict(self) -> dict[str, str]:
        base: dict[str, str] = super().to_dict()
        base["profile"] = json.dumps(self.profile)
        return base

    @property
    def profile(self) -> dict[str, Any]:
        return {
            "num_rows": self.record.row_count,
            "features": self.record.features,
            "feature_service": self.record.feature_service,
            "min_event_timestamp": _iso(self.record.min_event_timestamp),
            "max_event_timestamp": _iso(self.record.max_event_timestamp),
            "fingerprint": self.record.entity_fingerprint,
        }

    @property
    def schema(self) -> None:
        return None


def log_training_dataset(
    record: SavedDataset,
    *,
    service_url: str | None = None,
    registry_url: str | None = None,
    context: str = "training",
) -> TrainingDataset:
    """Log a saved training dataset into the active MLflow run as a dataset input.

    Args:
        record: the saved dataset (``save_training_dataset``, ``fetch_and_save``, or
            ``get_saved_dataset``).
        service_url: the featurestore service that serves the store, if any.
        registry_url: the registry holding the catalog (its password is never logged).
        context: MLflow's input context tag (``training``, ``evaluation``, ...).

    Returns:
        The MLflow dataset that was logged.

    Raises:
        InvalidRequestError: no active MLflow run (start one with ``mlflow.start_run()``).
    """
    if mlflow.active_run() is None:
        raise InvalidRequestError(
            "no active MLflow run to log the training dataset into; call it inside "
            "`with mlflow.start_run():`"
        )
    lineage = DatasetLineage(
        project=record.project,
        name=record.name,
        version=record.version,
        fingerprint=record.entity_fingerprint,
        uri=dataset_uri(record.project, record.name, record.version),
        service_url=service_url,
        registry=_hide_password(registry_url),
    )
    dataset = TrainingDataset(record, FeatureStoreDatasetSource(lineage))
    mlflow.log_input(
        dataset,
        context=context,
        tags={
            "featurestore.dataset": record.name,
            "featurestore.version": str(record.version),
            "featurestore.rows": str(record.row_count),
        },
    )
    return dataset


def run_lineage(run_id: str, *, tracking_uri: str | None = None) -> list[DatasetLineage]:
    """Every featurestore dataset a run logged, in logging order.

    Raises:
        NotFoundError: the run logged none.
    """
    run = MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    found = [
        FeatureStoreDatasetSource.from_dict(json.loads(item.dataset.source)).lineage
        for item in run.inputs.dataset_inputs
        if item.dataset.source_type == SOURCE_TYPE
    ]
    if not found:
        raise NotFoundError(
            f"MLflow run {run_id} logged no featurestore training dataset; log one with "
            "pipelines.lineage.log_training_dataset()",
            run_id=run_id,
        )
    return found


def load_run_dataset(
    run_id: str, config: StoreConfig, *, tracking_uri: str | None = None
) -> tuple[SavedDataset, pd.DataFrame]:
    """The exact training dataset a run used, from our store.

    Args:
        run_id: the MLflow run.
        config: the store that holds the dataset.
        tracking_uri: the MLflow tracking server (default: MLflow's current one).

    Returns:
        The catalog record and its rows.

    Raises:
        NotFoundError: the run logged no dataset, or the store no longer has it.
        ConflictError: the store's dataset of that name and version is not the one the run
            recorded (another project, or a different fingerprint).
    """
    lineage = run_lineage(run_id, tracking_uri=tracking_uri)[0]
    with store_environment(config):
        store = open_store(config)
        if store.project != lineage.project:
            raise ConflictError(
                f"run {run_id} trained on project {lineage.project!r}, but the store at "
                f"{config.repo_path} is project {store.project!r}",
            )
        record = get_saved_dataset(lineage.name, lineage.version, store=store)
        if record.entity_fingerprint != lineage.fingerprint:
            raise ConflictError(
                f"training dataset {lineage.name!r} v{lineage.version} in the store has "
                f"fingerprint {record.entity_fingerprint[:12]}..., but run {run_id} recorded "
                f"{lineage.fingerprint[:12]}...; the catalog was rewritten since",
            )
        frame = load_training_dataset(lineage.name, lineage.version, store=store)
    assert isinstance(frame, pd.DataFrame)
    return record, frame
