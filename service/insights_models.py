"""JSON models of the statistics, drift and training-dataset routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from foundation.statistics import ColumnStats
from foundation.stats_log import StatisticsRun
from offline_store.datasets import SavedDataset
from service.insights import FeatureDrift, Freshness


class BucketOut(BaseModel):
    lower: float
    upper: float
    count: int


class ColumnStatsOut(BaseModel):
    """Statistics of one column; see ``foundation.statistics`` for exact semantics."""

    name: str
    kind: Literal["numeric", "string", "other"]
    dtype: str
    count: int
    nulls: int
    completeness: float = Field(description="Share of non-null values.")
    approx_distinct: int | None = Field(
        description="Exact up to 20 values, else HyperLogLog (relative standard error 0.81%)."
    )
    min: float | None
    max: float | None
    mean: float | None
    std: float | None = Field(description="Sample standard deviation (ddof=1).")
    histogram: list[BucketOut] = Field(
        description="Numeric: one bucket per value (lower == upper) when at most 20 distinct "
        "values, else 20 equal-width buckets; counts sum to count - nulls."
    )
    histogram_exact: bool
    top: list[tuple[str, int]] = Field(description="Strings: most frequent values and counts.")
    top_exact: bool


class RunOut(BaseModel):
    """One statistics run: a feature view window or a dataset split."""

    subject_kind: str
    subject_name: str
    subject_version: int | None
    split: str
    source: str = Field(description="materialize | window | saved")
    run_id: str
    window_start: datetime | None
    window_end: datetime | None
    computed_at: datetime
    row_count: int
    columns: list[ColumnStatsOut]


class FreshnessOut(BaseModel):
    feature_view: str
    ttl_seconds: int | float  # whole seconds as an int
    newest_event_at: datetime | None
    age_seconds: float | None
    status: Literal["fresh", "stale", "never"]
    last_materialized_at: datetime | None
    last_rows: int | None
    last_window_end: datetime | None


class DatasetOut(BaseModel):
    name: str
    version: int
    features: list[str]
    feature_service: str | None
    full_feature_names: bool
    entity_fingerprint: str
    row_count: int
    min_event_timestamp: datetime | None
    max_event_timestamp: datetime | None
    created_at: datetime


class FeatureDriftOut(BaseModel):
    feature: str
    column: str
    feature_view: str
    psi: float | None = Field(description="Population stability index; null when not computable.")
    drifted: bool
    current_run_id: str | None
    current_computed_at: datetime | None
    note: str


class DriftOut(BaseModel):
    """PSI of each feature between a dataset's training split and its view's latest window."""

    name: str
    version: int
    threshold: float
    drifted: bool
    features: list[FeatureDriftOut]


class ComputeWindow(BaseModel):
    start: datetime = Field(description="Window start (RFC 3339; naive = UTC).")
    end: datetime = Field(description="Window end, exclusive.")


def column_out(stats: ColumnStats) -> ColumnStatsOut:
    data: dict[str, Any] = stats.to_dict()
    return ColumnStatsOut(**data)


def run_out(run: StatisticsRun) -> RunOut:
    return RunOut(
        subject_kind=run.subject_kind,
        subject_name=run.subject_name,
        subject_version=run.subject_version,
        split=run.split,
        source=run.source,
        run_id=run.run_id,
        window_start=run.window_start,
        window_end=run.window_end,
        computed_at=run.computed_at,
        row_count=run.row_count,
        columns=[column_out(c) for c in run.columns],
    )


def freshness_out(row: Freshness) -> FreshnessOut:
    return FreshnessOut(**{k: getattr(row, k) for k in FreshnessOut.model_fields})


def dataset_out(record: SavedDataset) -> DatasetOut:
    return DatasetOut(**{k: getattr(record, k) for k in DatasetOut.model_fields})


def drift_out(record: SavedDataset, features: list[FeatureDrift], threshold: float) -> DriftOut:
    return DriftOut(
        name=record.name,
        version=record.version,
        threshold=threshold,
        drifted=any(f.drifted for f in features),
        features=[
            FeatureDriftOut(**{k: getattr(f, k) for k in FeatureDriftOut.model_fields})
            for f in features
        ],
    )
