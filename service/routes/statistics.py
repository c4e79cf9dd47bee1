"""``GET /statistics/...``: freshness, statistics runs, saved datasets and drift (read scope).

``POST /statistics/feature-views/{name}/compute`` (write scope, in :data:`compute_router`)
profiles an offline window on demand and stores it as a run.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from offline_store.statistics import profile_window
from service.deps import InsightsDep, MetricsDep, SnapshotDep, StoreDep
from service.insights_models import (
    ComputeWindow,
    DatasetOut,
    DriftOut,
    FreshnessOut,
    RunOut,
    dataset_out,
    drift_out,
    freshness_out,
    run_out,
)
from service.schemas import ErrorResponse

router = APIRouter(prefix="/statistics", tags=["statistics"])
compute_router = APIRouter(prefix="/statistics", tags=["statistics"])
_MAX_VERSION = 2**31 - 1  # the column is a 32-bit integer
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
}


@router.get("/freshness", summary="Every feature view's age against its TTL")
def freshness(snapshot: SnapshotDep, insights: InsightsDep) -> list[FreshnessOut]:
    """Newest materialized event, age, status (fresh, stale, never) and last run per view."""
    return [freshness_out(r) for r in insights.freshness(snapshot)]


@router.get("/feature-views/{name}", summary="Statistics runs of a feature view", responses=_ERRORS)
def view_statistics(
    name: str,
    snapshot: SnapshotDep,
    insights: InsightsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 30,
) -> list[RunOut]:
    """The view's runs (materializations, on-demand windows), newest first."""
    return [run_out(r) for r in insights.view_runs(snapshot, name, limit)]


@router.get("/training-datasets", summary="Saved training datasets, every version")
def training_datasets(insights: InsightsDep) -> list[DatasetOut]:
    """Every saved dataset of the project, by name then version."""
    return [dataset_out(d) for d in insights.datasets().list()]


@router.get(
    "/training-datasets/{name}/versions/{version}",
    summary="Statistics of a saved dataset, whole and per split",
    responses=_ERRORS,
)
def dataset_statistics(
    name: str, version: Annotated[int, Path(ge=1, le=_MAX_VERSION)], insights: InsightsDep
) -> list[RunOut]:
    """Runs of splits ``all``, ``train``, ``validation``, ``test`` stored at save time."""
    return [run_out(r) for r in insights.dataset_runs(name, version)]


@router.get(
    "/drift/{name}", summary="Drift of a saved dataset against the latest data", responses=_ERRORS
)
def drift(
    name: str,
    insights: InsightsDep,
    metrics: MetricsDep,
    version: Annotated[int | None, Query(ge=1, le=_MAX_VERSION)] = None,
) -> DriftOut:
    """PSI per feature between the dataset's training split and the latest window of each
    view (materialized or profiled); ``drifted`` at or above ``FEATURESTORE_DRIFT_PSI_THRESHOLD``.
    Also sets the ``featurestore_feature_drift_psi`` gauge."""
    record, features = insights.drift(name, version)
    for f in features:
        if f.psi is not None:
            metrics.note_drift(record.name, f.column, f.psi)
    return drift_out(record, features, insights.drift_threshold)


@compute_router.post(
    "/feature-views/{name}/compute",
    summary="Profile a window of a feature view's offline data",
    responses=_ERRORS,
)
def compute(
    name: str, window: ComputeWindow, snapshot: SnapshotDep, store: StoreDep, insights: InsightsDep
) -> RunOut:
    """Every row of the view's batch source with ``start <= event_ts < end``, stored as a run."""
    snapshot.view(name)
    return run_out(profile_window(store, name, window.start, window.end, log=insights.log))
