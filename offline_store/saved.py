"""Saved, versioned training datasets: build once, record, list, reload by name and version.

The records live in ``fs_training_datasets`` in the registry database (the SQLAlchemy URL in
``feature_store.yaml`` ``registry.path``); the data is a Parquet file, by default under
``<repo>/data/training/<name>/``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import sqlalchemy as sa
from feast import FeatureStore

from foundation.errors import InvalidRequestError, NotFoundError
from foundation.stats_log import StatisticsLog
from offline_store.datasets import DatasetCatalog, SavedDataset, upgrade
from offline_store.entities import EntitySource, is_sql
from offline_store.frame_types import SUMMARY_FILE, feast_frame_types
from offline_store.ipc import table_to_ipc
from offline_store.listing import source_files
from offline_store.sdk import Output, Result, build_job, resolve_features, resolve_store
from offline_store.statistics import profile_saved_dataset

log = logging.getLogger(__name__)


def fingerprint(entity_source: EntitySource) -> str:
    """SHA-256 identifying the entity rows a dataset was built from.

    Frames and tables hash their Arrow IPC serialization; Parquet paths hash the name and bytes
    of each file the join reads, in its order; SQL hashes the query text (the rows it selects
    can change with the data).
    """
    digest = hashlib.sha256()
    if isinstance(entity_source, pd.DataFrame):
        entity_source = pa.Table.from_pandas(entity_source, preserve_index=False)
    if isinstance(entity_source, pa.Table):
        digest.update(b"arrow:")
        digest.update(table_to_ipc(entity_source))
        return digest.hexdigest()
    text = str(entity_source)
    if isinstance(entity_source, str) and is_sql(text):
        digest.update(b"sql:" + " ".join(text.split()).encode())
        return digest.hexdigest()
    digest.update(b"parquet:")
    # The files the join reads, in its order (hidden names and symlink loops as it lists them).
    for file in source_files(text):
        digest.update(os.path.basename(file).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _engine(fs: FeatureStore) -> sa.Engine:
    url = str(fs.config.registry.path)
    if "://" not in url:
        raise InvalidRequestError(
            "saved training datasets live next to a SQL registry; set registry_type: sql and a "
            f"SQLAlchemy URL as registry.path (found {url!r})",
        )
    return sa.create_engine(url, pool_pre_ping=True)


def catalog_for(fs: FeatureStore) -> tuple[DatasetCatalog, sa.Engine]:
    """The dataset catalog of a store's project (tables migrated); dispose the engine after."""
    engine = _engine(fs)
    upgrade(engine)
    return DatasetCatalog(engine, fs.project), engine


def save_training_dataset(
    entity_source: EntitySource,
    features: Sequence[str] | None = None,
    feature_service: str | None = None,
    *,
    name: str,
    store: FeatureStore | None = None,
    repo_path: str | Path | None = None,
    path: str | Path | None = None,
    full_feature_names: bool = False,
    version: int | None = None,
) -> SavedDataset:
    """Build a training dataset straight to Parquet and record it as the next version of ``name``.

    Args:
        entity_source: DataFrame, Arrow table, Parquet path or SQL (see ``get_training_dataset``).
        features: ``view:feature`` references.
        feature_service: a feature service name instead of ``features``.
        name: the dataset name.
        store: an open Feast store (or ``repo_path``).
        repo_path: a feature repo directory.
        path: where to write; default ``<repo>/data/training/<name>/<utc time>-<id>.parquet``.
        full_feature_names: name columns ``view__feature``.
        version: force a version number (default: latest + 1).

    Returns:
        The stored record. Its statistics (whole and per time split) are stored too,
        see :func:`offline_store.statistics.profile_saved_dataset`.

    Raises:
        InvalidRequestError: bad input, or the registry is not SQL.
        NotFoundError: unknown features.
        ConflictError: ``version`` already exists.
    """
    fs = resolve_store(store, repo_path)
    _, refs = resolve_features(fs, features, feature_service)
    if path is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = (
            Path(fs.repo_path)
            / "data"
            / "training"
            / name
            / f"{stamp}-{uuid.uuid4().hex[:8]}.parquet"
        )
    job = build_job(
        fs, entity_source, features, feature_service, full_feature_names=full_feature_names
    )
    dest = job.to_parquet(path)
    metadata = job.metadata
    catalog, engine = catalog_for(fs)
    try:
        record = catalog.add(
            name=name,
            version=version,
            features=refs,
            feature_service=feature_service,
            full_feature_names=full_feature_names,
            entity_fingerprint=fingerprint(entity_source),
            # A file (DuckDB) or a directory of parts (Spark).
            row_count=pads.dataset(dest, format="parquet").count_rows(),
            min_event_timestamp=metadata.min_event_timestamp if metadata else None,
            max_event_timestamp=metadata.max_event_timestamp if metadata else None,
            storage_path=dest,
        )
        # Statistics per column and per split, stored as this version's runs (the drift
        # reference); the dataset is saved either way.
        try:
            profile_saved_dataset(record, StatisticsLog(engine, fs.project))
        except (sa.exc.SQLAlchemyError, OSError, pa.ArrowException) as exc:
            log.warning("could not record statistics of dataset %r: %s", name, exc)
        return record
    finally:
        engine.dispose()


def list_training_datasets(
    name: str | None = None,
    *,
    store: FeatureStore | None = None,
    repo_path: str | Path | None = None,
) -> list[SavedDataset]:
    """Every saved dataset of the project (or every version of ``name``).

    Raises:
        InvalidRequestError: the registry is not SQL.
    """
    catalog, engine = catalog_for(resolve_store(store, repo_path))
    try:
        return catalog.list(name)
    finally:
        engine.dispose()


def get_saved_dataset(
    name: str,
    version: int | None = None,
    *,
    store: FeatureStore | None = None,
    repo_path: str | Path | None = None,
) -> SavedDataset:
    """The record of one saved dataset (latest version by default).

    Raises:
        NotFoundError: no such name or version.
    """
    catalog, engine = catalog_for(resolve_store(store, repo_path))
    try:
        return catalog.get(name, version)
    finally:
        engine.dispose()


def load_training_dataset(
    name: str,
    version: int | None = None,
    *,
    store: FeatureStore | None = None,
    repo_path: str | Path | None = None,
    output: Output = "pandas",
) -> Result:
    """Reload a saved dataset's rows.

    Args:
        name: the dataset name.
        version: the version (default: latest).
        store: an open Feast store (or ``repo_path``).
        repo_path: a feature repo directory.
        output: ``"pandas"``, ``"arrow"`` or ``"parquet"`` (the stored path).

    Returns:
        The rows (typed as ``get_training_dataset`` gives them), or the Parquet path.

    Raises:
        NotFoundError: unknown dataset, or its file is gone.
    """
    record = get_saved_dataset(name, version, store=store, repo_path=repo_path)
    if not os.path.exists(record.storage_path):
        raise NotFoundError(
            f"training dataset {name!r} v{record.version} is recorded at "
            f"{record.storage_path!r} but the file is gone; rebuild it with "
            "save_training_dataset()",
            name=name,
            version=record.version,
        )
    if output == "parquet":
        return record.storage_path
    # The types the dataset was built with (Feast's nanosecond timestamps), whatever unit
    # the file stores them in.
    table = pq.read_table(record.storage_path)
    summary = os.path.join(record.storage_path, SUMMARY_FILE)
    if os.path.isdir(record.storage_path) and os.path.exists(summary):
        # Parts written by Spark's executors: the entity columns' pandas dtypes beside them.
        table = table.replace_schema_metadata(pq.read_schema(summary).metadata)
    table = feast_frame_types(table, {})
    return table.to_pandas() if output == "pandas" else table
