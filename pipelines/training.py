"""Building saved training datasets for pipelines: in-process, or over HTTP and then recorded.

- :func:`save_dataset` is the SDK's :func:`~offline_store.saved.save_training_dataset` on a
  configured store (the Airflow training DAG).
- :func:`fetch_and_save` asks the running service for the rows (``POST /training-dataset``
  with an API key, the SDK's HTTP path), writes them next to the store's other saved
  datasets and records them in the same catalog, with the same fingerprint the SDK would
  give the same entity rows (the Kubeflow pipeline).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from foundation.errors import InvalidRequestError
from offline_store.datasets import SavedDataset
from offline_store.entities import EntitySource
from offline_store.saved import catalog_for, fingerprint, save_training_dataset
from offline_store.sdk import get_training_dataset, resolve_features
from pipelines.config import StoreConfig, store_environment
from pipelines.materialize import open_store

TIMESTAMP_COLUMN = "event_timestamp"


def save_dataset(
    config: StoreConfig,
    entity_source: EntitySource,
    *,
    name: str,
    feature_service: str | None = None,
    features: Sequence[str] | None = None,
) -> SavedDataset:
    """Build a point-in-time dataset in this process and record it as the next version.

    Raises:
        InvalidRequestError, NotFoundError: bad entity rows or unknown features.
    """
    with store_environment(config):
        return save_training_dataset(
            entity_source,
            features,
            feature_service,
            name=name,
            store=open_store(config),
        )


def dataset_path(config: StoreConfig, name: str) -> Path:
    """Where a new version of ``name`` goes: the SDK's layout under ``<repo>/data/training``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return config.repo_path / "data" / "training" / name / f"{stamp}-{uuid.uuid4().hex[:8]}.parquet"


def _time_range(entities: pa.Table) -> tuple[datetime | None, datetime | None]:
    if TIMESTAMP_COLUMN not in entities.column_names or entities.num_rows == 0:
        return None, None
    times = entities[TIMESTAMP_COLUMN]
    if times.type.tz is None:
        times = pc.assume_timezone(times, "UTC")
    bounds = pc.min_max(times).as_py()
    return bounds["min"], bounds["max"]


def fetch_and_save(
    config: StoreConfig,
    entities: pa.Table,
    *,
    name: str,
    url: str,
    api_key: str | None,
    feature_service: str | None = None,
    features: Sequence[str] | None = None,
    timeout: float = 600.0,
) -> SavedDataset:
    """Get a training dataset from the service over HTTP and save it as the next version.

    Args:
        config: the store whose catalog records the dataset.
        entities: the entity rows (join keys, ``event_timestamp``, labels), sent as Arrow.
        name: the dataset name.
        url: the service's base URL.
        api_key: sent as ``Authorization: Bearer``; ``None`` for a service without auth.
        feature_service: a feature service name (or ``features``).
        features: ``view:feature`` references.
        timeout: HTTP timeout in seconds.

    Returns:
        The catalog record; its ``entity_fingerprint`` is what
        :func:`offline_store.saved.fingerprint` gives ``entities``.

    Raises:
        FeatureStoreError: the service's error (401 without a valid key, 404 unknown
            features, ...), raised as the matching ``foundation.errors`` class.
    """
    if entities.num_rows == 0:
        raise InvalidRequestError(f"no entity rows to build training dataset {name!r} from")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    dest = dataset_path(config, name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with httpx.Client(base_url=url, headers=headers, timeout=timeout) as client:
        written = get_training_dataset(
            entities,
            features,
            feature_service,
            url=url,
            http_client=client,
            output="parquet",
            path=dest,
        )
    first, last = _time_range(entities)
    with store_environment(config):
        store = open_store(config)
        _, refs = resolve_features(store, features, feature_service)
        catalog, engine = catalog_for(store)
    try:
        return catalog.add(
            name=name,
            features=refs,
            feature_service=feature_service,
            full_feature_names=False,
            entity_fingerprint=fingerprint(entities),
            row_count=pq.ParquetFile(str(written)).metadata.num_rows,
            min_event_timestamp=first,
            max_event_timestamp=last,
            storage_path=str(written),
        )
    finally:
        engine.dispose()
