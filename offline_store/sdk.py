"""Training-dataset SDK: point-in-time correct datasets in-process or from the HTTP service.

    from offline_store.sdk import get_training_dataset

    df = get_training_dataset(entities, ["driver_hourly_stats:conv_rate"], repo_path="feature_repo")
    path = get_training_dataset(
        entities, feature_service="ride_ranking_v1", url="http://127.0.0.1:6566",
        output="parquet", path="train.parquet",
    )

The entity source is a pandas DataFrame, an Arrow table, a Parquet path or an SQL query over
the offline data. Saved, versioned datasets are in :mod:`offline_store.saved`; splits in
:mod:`offline_store.split`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, TypeAlias

import httpx
import pandas as pd
import pyarrow as pa
from feast import FeatureService, FeatureStore
from feast.errors import FeastError

from foundation.environment import open_repo
from foundation.errors import (
    FeatureNotFoundError,
    FeatureServiceNotFoundError,
    FeatureStoreError,
    FeatureViewNotFoundError,
    InvalidRequestError,
)
from foundation.refs import split_version
from foundation.registry import stored_feature_views
from offline_store.entities import EntitySource
from offline_store.job import DuckDBRetrievalJob
from offline_store.sandbox import UntrustedEntities
from offline_store.spark_job import SparkRetrievalJob

Output: TypeAlias = Literal["pandas", "arrow", "parquet"]
Result: TypeAlias = pd.DataFrame | pa.Table | str


def resolve_store(store: FeatureStore | None, repo_path: str | Path | None) -> FeatureStore:
    """The store to use: the given one, or one opened at ``repo_path``.

    A repo opened here gets the tooling's defaults (:func:`foundation.environment.open_repo`):
    with ``FEATURESTORE_REGISTRY_URL`` unset, the SQLite registry under ``<repo>/data/``.

    Raises:
        InvalidRequestError: neither (or both) given.
    """
    if (store is None) == (repo_path is None):
        raise InvalidRequestError("pass exactly one of store=, repo_path= or url=")
    return store if store is not None else open_repo(str(repo_path))


def resolve_features(
    fs: FeatureStore, features: Sequence[str] | None, feature_service: str | None
) -> tuple[list[str] | FeatureService, list[str]]:
    """What to pass to Feast, and the flat list of feature refs it stands for.

    Raises:
        InvalidRequestError: neither or both of ``features``/``feature_service``, or a
            malformed ref.
        FeatureServiceNotFoundError, FeatureViewNotFoundError, FeatureNotFoundError: unknown
            names.
    """
    if (features is None) == (feature_service is None):
        raise InvalidRequestError("pass exactly one of features=[...] or feature_service=...")
    project = fs.project
    if feature_service is not None:
        try:
            service = fs.get_feature_service(feature_service)
        except FeastError as exc:
            raise FeatureServiceNotFoundError(
                f"feature service {feature_service!r} not in project {project!r}; run "
                "`feast apply` or check the name",
                feature_service=feature_service,
            ) from exc
        refs = [
            f"{p.name_to_use()}:{f.name}"
            for p in service.feature_view_projections
            for f in p.features
        ]
        return service, refs
    assert features is not None
    views = {v.name: {f.name for f in v.features} for v in stored_feature_views(fs)}
    views.update({v.name: {f.name for f in v.features} for v in fs.list_on_demand_feature_views()})
    for ref in features:
        view, sep, feature = ref.partition(":")
        if not sep or not view or not feature:
            raise InvalidRequestError(
                f"feature reference {ref!r} must look like 'feature_view:feature'", feature=ref
            )
        view, _ = split_version(view)  # Feast resolves a pinned version itself
        if view not in views:
            raise FeatureViewNotFoundError(
                f"feature view {view!r} not in project {project!r}; run `feast apply` in the "
                "feature repo or fix the reference",
                feature_view=view,
            )
        if feature not in views[view]:
            raise FeatureNotFoundError(
                f"feature {feature!r} not in feature view {view!r} (it has {sorted(views[view])})",
                feature_view=view,
                feature=feature,
            )
    return list(features), list(features)


def build_job(
    fs: FeatureStore,
    entity_source: EntitySource | UntrustedEntities,
    features: Sequence[str] | None = None,
    feature_service: str | None = None,
    *,
    full_feature_names: bool = False,
) -> DuckDBRetrievalJob | SparkRetrievalJob:
    """A lazy point-in-time job on ``fs``'s offline store (which must be ours: DuckDB or Spark).

    The HTTP service passes :class:`~offline_store.sandbox.UntrustedEntities`: the job then
    runs sandboxed and within limits. In-process callers pass their own source.

    Raises:
        InvalidRequestError: the repo does not use the DuckDB offline store, or bad input.
        NotFoundError: unknown feature service, view or feature.
    """
    wanted, _ = resolve_features(fs, features, feature_service)
    try:
        job = fs.get_historical_features(
            entity_df=entity_source,  # type: ignore[arg-type]
            features=wanted,
            full_feature_names=full_feature_names,
        )
    except FeatureStoreError:
        raise
    except (FeastError, ValueError) as exc:
        raise InvalidRequestError(f"cannot build the training dataset: {exc}") from exc
    if not isinstance(job, (DuckDBRetrievalJob, SparkRetrievalJob)):
        raise InvalidRequestError(
            "the repo's offline store is not offline_store.store.DuckDBParquetOfflineStore "
            "(or offline_store.spark.SparkOfflineStore); set it under offline_store: type: "
            "in feature_store.yaml",
        )
    return job


def stream_job(
    job: DuckDBRetrievalJob | SparkRetrievalJob, max_rows: int
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The result's schema and its batches in Feast's types, the query run up to the first.

    Running to the first batch makes input errors surface before a caller starts a
    response; an empty result still has ``to_arrow``'s schema.
    """
    batches = job.iter_batches(max_rows, feast_types=True)
    first = next(batches, None)
    if first is None:
        return job.to_arrow().schema, iter(())

    def rest() -> Iterator[pa.RecordBatch]:
        yield first
        yield from batches

    return first.schema, rest()


def deliver(
    job: DuckDBRetrievalJob | SparkRetrievalJob, output: Output, path: str | Path | None
) -> Result:
    """Run a job into the requested output (on Spark, ``parquet`` writes a directory of parts).

    Raises:
        InvalidRequestError: unknown output, or ``parquet`` without ``path``.
    """
    if output == "pandas":
        return job.to_df()
    if output == "arrow":
        return job.to_arrow()
    if output == "parquet":
        if path is None:
            raise InvalidRequestError("output='parquet' needs path=")
        return job.to_parquet(str(path))
    raise InvalidRequestError(f"output must be 'pandas', 'arrow' or 'parquet', not {output!r}")


def get_training_dataset(
    entity_source: EntitySource,
    features: Sequence[str] | None = None,
    feature_service: str | None = None,
    *,
    store: FeatureStore | None = None,
    repo_path: str | Path | None = None,
    url: str | None = None,
    http_client: httpx.Client | None = None,
    output: Output = "pandas",
    path: str | Path | None = None,
    full_feature_names: bool = False,
    timeout: float = 600.0,
) -> Result:
    """A point-in-time correct training dataset.

    Exactly one of ``store``, ``repo_path``, ``url`` or ``http_client`` says where it is built:
    in this process (a ``FeatureStore`` or a repo directory) or by the HTTP service (its base
    URL, or a ready ``httpx.Client`` whose base URL points at it).

    Args:
        entity_source: DataFrame, Arrow table, Parquet path or SQL over the offline data, with
            the join keys and an ``event_timestamp`` column (naive = UTC); extra columns kept.
        features: ``view:feature`` references.
        feature_service: a feature service name instead of ``features``.
        store: an open Feast store.
        repo_path: a feature repo directory.
        url: base URL of the featurestore service.
        http_client: an httpx client for the service (tests, auth headers, custom transports).
        output: ``"pandas"``, ``"arrow"`` or ``"parquet"`` (written to ``path``).
        path: destination file for ``output="parquet"``.
        full_feature_names: name columns ``view__feature``.
        timeout: HTTP timeout in seconds.

    Returns:
        A DataFrame, an Arrow table, or the Parquet path written.

    Raises:
        InvalidRequestError: bad arguments or entity rows.
        NotFoundError: unknown feature service, view or feature.
        FeatureStoreError: the query or the service failed.
    """
    if url is not None or http_client is not None:
        if store is not None or repo_path is not None:
            raise InvalidRequestError("pass exactly one of store=, repo_path= or url=")
        from offline_store.http_client import fetch_training_dataset

        return fetch_training_dataset(
            entity_source,
            features,
            feature_service,
            url=url,
            http_client=http_client,
            output=output,
            path=path,
            full_feature_names=full_feature_names,
            timeout=timeout,
        )
    fs = resolve_store(store, repo_path)
    job = build_job(
        fs, entity_source, features, feature_service, full_feature_names=full_feature_names
    )
    return deliver(job, output, path)
