"""Saved datasets for Feast's remote offline client: where they are written and read.

Feast's remote client names a saved dataset's storage by its data source's *name*
(``storage.to_data_source().name``), for a ``SavedDatasetFileStorage`` the path the user
gave. ``feast serve_offline`` looks that name up among the registered data sources only,
so a plain ``SavedDatasetFileStorage(path=...)`` fails there. We resolve the name in
two ways, in order:

1. a registered ``FileSource`` of that name: its path, as Feast does (the registry is
   written by whoever may ``feast apply``, so its paths are trusted);
2. otherwise a Parquet path, relative to the repo (or absolute), whose real path lies
   inside the repo's ``data/`` directory: no ``..``, globs or URLs, symlinks followed
   before the check. A caller's text reaches the disk only through this confinement.

Writing (``persist``) needs a key of scope ``write``; reading back (``pull_all``) needs
``read``; the service checks both.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from feast import FeatureStore, FileSource
from feast.errors import DataSourceObjectNotFoundException
from feast.infra.offline_stores.file_source import SavedDatasetFileStorage
from feast.utils import make_tzaware

from foundation.environment import data_dir
from foundation.errors import EntityPathRefusedError, InvalidRequestError
from offline_store.job import DuckDBRetrievalJob
from offline_store.sandbox import inside, plain_path
from offline_store.store import DuckDBParquetOfflineStore


def confined_dataset_path(store: FeatureStore, raw: str) -> str:
    """The real path of a saved dataset a remote caller named by path.

    Raises:
        EntityPathRefusedError: the path has ``..``, a glob or a URL, does not end in
            ``.parquet``, or resolves outside the repo's ``data/`` directory.
    """
    repo = Path(store.repo_path)
    base = os.path.realpath(data_dir(repo))
    refused = EntityPathRefusedError(
        f"saved dataset path {raw!r} is refused: name a .parquet file inside the server "
        f"repo's data/ directory (e.g. data/saved/<name>.parquet, relative to the repo), "
        "without '..', globs or URLs, or register a FileSource of that name"
    )
    if not plain_path(raw) or not raw.endswith(".parquet"):
        raise refused
    target = os.path.realpath(os.path.join(os.path.realpath(repo), raw))
    if not inside(target, base) or target == base:
        raise refused
    return target


def dataset_path(store: FeatureStore, name: str) -> str:
    """Where the saved dataset a remote caller named lives (see the module docstring).

    Raises:
        InvalidRequestError: a registered source of that name is not a FileSource.
        EntityPathRefusedError: not registered, and not a confined path.
    """
    try:
        source = store.get_data_source(name)
    except DataSourceObjectNotFoundException:
        return confined_dataset_path(store, name)
    if not isinstance(source, FileSource):
        raise InvalidRequestError(
            f"data source {name!r} is a {type(source).__name__}; saved datasets here are "
            "Parquet files (a FileSource)"
        )
    storage = SavedDatasetFileStorage(path=source.path)
    uri = storage.file_options.uri
    return uri if os.path.isabs(uri) else str(Path(store.repo_path) / uri)


def _strings(command: dict[str, Any], field: str) -> list[str]:
    value = command.get(field)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequestError(f'"{field}" must be a list of column names')
    return value


def _when(command: dict[str, Any], field: str) -> datetime | None:
    value = command.get(field)
    if value is None:
        return None
    try:
        return make_tzaware(datetime.fromisoformat(str(value)))
    except ValueError:
        raise InvalidRequestError(f'"{field}" must be an ISO 8601 time, got {value!r}') from None


def pull_all_job(store: FeatureStore, command: dict[str, Any]) -> DuckDBRetrievalJob:
    """The rows of a saved dataset, for the remote ``pull_all_from_table_or_query`` API.

    Column names reach SQL only as quoted identifiers, checked against the file's columns
    when the query runs (as every pull is).

    Raises:
        InvalidRequestError: a malformed command, or a column the file does not have.
        EntityPathRefusedError: the dataset's path is refused.
    """
    name = command.get("data_source_name")
    timestamp_field = command.get("timestamp_field")
    if not isinstance(name, str) or not isinstance(timestamp_field, str):
        raise InvalidRequestError('"data_source_name" and "timestamp_field" must be strings')
    created = command.get("created_timestamp_column")
    if created is not None and not isinstance(created, str):
        raise InvalidRequestError('"created_timestamp_column" must be a string or null')
    path = dataset_path(store, name)
    if not os.path.isfile(path):
        raise InvalidRequestError(f"saved dataset {name!r} has no file on the server")
    source = FileSource(name=name, path=path, timestamp_field=timestamp_field)
    return DuckDBParquetOfflineStore.pull_all_from_table_or_query(
        store.config,
        source,
        _strings(command, "join_key_columns"),
        _strings(command, "feature_name_columns"),
        timestamp_field,
        created or None,
        _when(command, "start_date"),
        _when(command, "end_date"),
    )
