"""What the console and the statistics routes read: freshness, statistics runs, drift.

Blocking SQL (the registry database) only; routes call it from plain ``def`` handlers, which
FastAPI runs in its thread pool. One :class:`Insights` per app, opened lazily (creating a
SQLAlchemy engine does not connect).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from foundation.drift import column_psi
from foundation.environment import sqlalchemy_url
from foundation.errors import NotFoundError
from foundation.statistics import ColumnStats
from foundation.stats_log import FEATURE_VIEW, TRAINING_DATASET, StatisticsLog, StatisticsRun
from offline_store.datasets import DatasetCatalog, SavedDataset
from offline_store.datasets import upgrade as upgrade_datasets
from service.catalog import RegistrySnapshot
from service.metrics import Metrics
from service.push_stats import PushStatistics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Freshness:
    """One row of the freshness board."""

    feature_view: str
    ttl_seconds: int | float
    newest_event_at: datetime | None
    age_seconds: float | None
    status: str  # fresh | stale | never
    last_materialized_at: datetime | None
    last_rows: int | None
    last_window_end: datetime | None


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """PSI of one feature of a saved dataset against the latest window of its view."""

    feature: str
    column: str
    feature_view: str
    psi: float | None
    drifted: bool
    current_run_id: str | None
    current_computed_at: datetime | None
    note: str = ""


class Insights:
    """Statistics, datasets and drift of one project, next to its SQL registry.

    Args:
        registry_url: the registry database.
        project: the Feast project.
        drift_threshold: PSI at or above which a feature counts as drifted.
        push_window_seconds: how often pushed rows' statistics are stored.
    """

    def __init__(
        self,
        registry_url: str,
        project: str,
        *,
        drift_threshold: float,
        push_window_seconds: float = 60.0,
    ) -> None:
        self.engine = sa.create_engine(sqlalchemy_url(registry_url), pool_pre_ping=True)
        self.project = project
        self.drift_threshold = drift_threshold
        self.log = StatisticsLog(self.engine, project)
        self.pushes = PushStatistics(self.log, push_window_seconds)
        self._datasets_ready = False

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.dispose()

    def datasets(self) -> DatasetCatalog:
        """The saved training datasets of the project (tables created on first use)."""
        if not self._datasets_ready:
            upgrade_datasets(self.engine)
            self._datasets_ready = True
        return DatasetCatalog(self.engine, self.project)

    def freshness(self, snapshot: RegistrySnapshot, now: datetime | None = None) -> list[Freshness]:
        """Every batch view's age against its TTL with its last materialization, by name.

        A view is ``stale`` when its newest materialized event is older than its TTL (TTL 0
        never expires), ``never`` when nothing was materialized.
        """
        now = now or datetime.now(UTC)
        latest = self.log.latest_by_subject(FEATURE_VIEW, source="materialize")
        rows = []
        for name, info in sorted(snapshot.views.items()):
            newest = snapshot.newest_events.get(name)
            age = max(0.0, (now - newest).total_seconds()) if newest is not None else None
            if age is None:
                status = "never"
            elif info.ttl_seconds and age > info.ttl_seconds:
                status = "stale"
            else:
                status = "fresh"
            run = latest.get(name)
            intervals = info.view.materialization_intervals
            rows.append(
                Freshness(
                    feature_view=name,
                    ttl_seconds=info.ttl_seconds,
                    newest_event_at=newest,
                    age_seconds=age,
                    status=status,
                    last_materialized_at=run.computed_at if run else None,
                    last_rows=run.row_count if run else None,
                    last_window_end=max(end for _, end in intervals) if intervals else None,
                )
            )
        return rows

    def view_runs(self, snapshot: RegistrySnapshot, name: str, limit: int) -> list[StatisticsRun]:
        """A view's runs, newest first.

        Raises:
            FeatureViewNotFoundError: no such view.
        """
        snapshot.view(name)
        return self.log.runs(FEATURE_VIEW, name, limit=limit)

    def dataset(self, name: str, version: int | None) -> SavedDataset:
        """One saved dataset (latest version by default).

        Raises:
            NotFoundError: no such dataset or version.
        """
        return self.datasets().get(name, version)

    def dataset_runs(self, name: str, version: int) -> list[StatisticsRun]:
        """The runs stored when the dataset version was saved, ``all`` first.

        Raises:
            NotFoundError: no such dataset or version.
        """
        self.dataset(name, version)
        runs = self.log.runs(TRAINING_DATASET, name, subject_version=version, limit=10)
        order = {"all": 0, "train": 1, "validation": 2, "test": 3}
        return sorted(runs, key=lambda r: order.get(r.split, 9))

    def drift(self, name: str, version: int | None) -> tuple[SavedDataset, list[FeatureDrift]]:
        """PSI of each feature of a dataset's training split against its view's latest run.

        Returns:
            The dataset record and one entry per feature (``psi`` None with a note when
            either side has no statistics).

        Raises:
            NotFoundError: no such dataset or version.
        """
        record = self.dataset(name, version)
        runs = {r.split: r for r in self.dataset_runs(name, record.version)}
        # The training split is what the model learnt from; a dataset whose rows share one
        # timestamp has an empty one (ties stay together), so fall back to the whole set.
        reference = next(
            (runs[s] for s in ("train", "all") if s in runs and runs[s].row_count), None
        )
        if reference is None:
            raise NotFoundError(
                f"training dataset {name!r} v{record.version} has no statistics; it was saved "
                "before statistics were recorded: save it again",
                name=name,
                version=record.version,
            )
        ref_columns = {c.name: c for c in reference.columns}
        latest = self.log.latest_by_subject(FEATURE_VIEW)
        out = []
        for ref in record.features:
            view, _, feature = ref.partition(":")
            column = f"{view}__{feature}" if record.full_feature_names else feature
            out.append(
                _feature_drift(
                    ref_columns.get(column),
                    latest.get(view),
                    feature,
                    column,
                    view,
                    self.drift_threshold,
                )
            )
        return record, out

    def update_drift_gauge(self, metrics: Metrics) -> int:
        """Recompute drift of the latest version of every saved dataset into the gauge.

        Returns:
            How many features were set.
        """
        latest: dict[str, int] = {}
        for record in self.datasets().list():
            latest[record.name] = max(record.version, latest.get(record.name, 0))
        count = 0
        for name, version in latest.items():
            try:
                _, features = self.drift(name, version)
            except NotFoundError:  # saved before statistics existed
                continue
            for f in features:
                if f.psi is not None:
                    metrics.note_drift(name, f.column, f.psi)
                    count += 1
        return count

    async def drift_forever(self, metrics: Metrics, every_seconds: float) -> None:
        """Keep the drift gauge current: recompute every ``every_seconds`` until cancelled."""
        while True:
            await asyncio.sleep(every_seconds)
            try:
                await asyncio.to_thread(self.update_drift_gauge, metrics)
            except sa.exc.SQLAlchemyError as exc:
                log.warning("could not update the drift gauge: %s", exc)


def _feature_drift(
    reference: ColumnStats | None,
    run: StatisticsRun | None,
    feature: str,
    column: str,
    view: str,
    threshold: float,
) -> FeatureDrift:
    def missing(note: str) -> FeatureDrift:
        return FeatureDrift(feature, column, view, None, False, None, None, note)

    if reference is None:
        return missing("no statistics for this column in the dataset")
    if run is None:
        return missing(f"feature view {view!r} has no materialized or profiled window yet")
    current = next((c for c in run.columns if c.name == feature), None)
    if current is None:
        return missing(f"the latest window of {view!r} has no column {feature!r}")
    try:
        value = column_psi(reference, current)
    except ValueError as exc:
        return missing(str(exc))
    return FeatureDrift(
        feature, column, view, value, value >= threshold, run.run_id, run.computed_at
    )
