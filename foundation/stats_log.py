"""Statistics runs stored next to Feast's SQL registry, so they form a time series.

One row of ``featurestore_statistics`` per (subject, split, run): the subject is a feature
view (runs from materialization, on-demand windows, pushes) or a saved training dataset
version (one run per split at save time). Per-column statistics are a JSON list of
:meth:`foundation.statistics.ColumnStats.to_dict`. Created by the Alembic migrations in
``foundation/stats_migrations`` with their own version table. It lives in the foundation
because both stores record runs and neither may import the other.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from foundation.migrations import upgrade_schema
from foundation.statistics import ColumnStats

VERSION_TABLE = "featurestore_stats_alembic_version"
HEAD_REVISION = "stats_0001"

SubjectKind = Literal["feature_view", "training_dataset"]
FEATURE_VIEW: SubjectKind = "feature_view"
TRAINING_DATASET: SubjectKind = "training_dataset"


# A Core table rather than an ORM model: `feast materialize` records a run per view, and
# importing sqlalchemy.orm would add ~50 ms to every such call.
METADATA = sa.MetaData()
STATISTICS = sa.Table(
    "featurestore_statistics",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project", sa.String(255), nullable=False),
    sa.Column("subject_kind", sa.String(32), nullable=False),
    sa.Column("subject_name", sa.String(255), nullable=False),
    sa.Column("subject_version", sa.Integer, nullable=True),
    sa.Column("split", sa.String(32), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
    sa.Column("window_end", sa.DateTime(timezone=True), nullable=True),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("row_count", sa.BigInteger, nullable=False),
    sa.Column("columns", sa.JSON, nullable=False),
)
_ROW = STATISTICS.c


@dataclass(frozen=True, slots=True)
class StatisticsRun:
    """One stored run as callers see it."""

    subject_kind: str
    subject_name: str
    subject_version: int | None
    split: str
    source: str
    run_id: str
    window_start: datetime | None
    window_end: datetime | None
    computed_at: datetime
    row_count: int
    columns: list[ColumnStats]


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _run(row: sa.Row[Any]) -> StatisticsRun:
    computed = _utc(row.computed_at)
    assert computed is not None
    return StatisticsRun(
        subject_kind=row.subject_kind,
        subject_name=row.subject_name,
        subject_version=row.subject_version,
        split=row.split,
        source=row.source,
        run_id=row.run_id,
        window_start=_utc(row.window_start),
        window_end=_utc(row.window_end),
        computed_at=computed,
        row_count=row.row_count,
        columns=[ColumnStats.from_dict(c) for c in row.columns],
    )


class StatisticsLog:
    """Record and read the statistics runs of one project.

    Creates its table (idempotent migrations) on first use.

    Args:
        engine: the registry database.
        project: the Feast project.
    """

    def __init__(self, engine: sa.Engine, project: str) -> None:
        self._engine = engine
        self._project = project
        self._ready = False
        self._lock = threading.Lock()

    def ensure_table(self) -> None:
        """Create or migrate the table if needed (one query once it is at the head)."""
        if self._ready:
            return
        with self._lock:
            if not self._ready and not self._at_head():
                migrations = Path(__file__).with_name("stats_migrations")
                try:
                    upgrade_schema(self._engine, migrations)
                except sa.exc.SQLAlchemyError:
                    # A concurrent process created it between our check and our CREATE.
                    upgrade_schema(self._engine, migrations)
            self._ready = True

    def _at_head(self) -> bool:
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))
                return [r[0] for r in rows] == [HEAD_REVISION]
        except sa.exc.SQLAlchemyError:
            return False

    def record(
        self,
        *,
        subject_kind: SubjectKind,
        subject_name: str,
        columns: Sequence[ColumnStats],
        row_count: int,
        source: str,
        subject_version: int | None = None,
        split: str = "all",
        window_start: datetime | None = None,
        window_end: datetime | None = None,
        run_id: str | None = None,
    ) -> StatisticsRun:
        """Store one run (naive times are UTC).

        Returns:
            The stored run.
        """
        self.ensure_table()
        run = StatisticsRun(
            subject_kind=subject_kind,
            subject_name=subject_name,
            subject_version=subject_version,
            split=split,
            source=source,
            run_id=run_id or uuid.uuid4().hex,
            window_start=_utc(window_start),
            window_end=_utc(window_end),
            computed_at=datetime.now(UTC),
            row_count=row_count,
            columns=list(columns),
        )
        names = [column.name for column in STATISTICS.columns]
        stored = {name: getattr(run, name) for name in names if hasattr(run, name)}
        stored.update(project=self._project, columns=[c.to_dict() for c in columns])
        with self._engine.begin() as conn:
            conn.execute(sa.insert(STATISTICS).values(**stored))
        return run

    def runs(
        self,
        subject_kind: SubjectKind,
        subject_name: str,
        *,
        subject_version: int | None = None,
        split: str | None = None,
        limit: int = 50,
    ) -> list[StatisticsRun]:
        """The subject's runs, newest first (at most ``limit``)."""
        self.ensure_table()
        query = sa.select(STATISTICS).where(
            _ROW.project == self._project,
            _ROW.subject_kind == subject_kind,
            _ROW.subject_name == subject_name,
        )
        if subject_version is not None:
            query = query.where(_ROW.subject_version == subject_version)
        if split is not None:
            query = query.where(_ROW.split == split)
        query = query.order_by(_ROW.computed_at.desc(), _ROW.id.desc())
        with self._engine.connect() as conn:
            return [_run(r) for r in conn.execute(query.limit(limit))]

    def latest_by_subject(
        self, subject_kind: SubjectKind, *, source: str | None = None
    ) -> dict[str, StatisticsRun]:
        """The newest run with rows of every subject of a kind (of one ``source`` if given)."""
        self.ensure_table()
        newest = sa.select(sa.func.max(_ROW.id)).where(
            _ROW.project == self._project,
            _ROW.subject_kind == subject_kind,
            _ROW.row_count > 0,
        )
        if source is not None:
            newest = newest.where(_ROW.source == source)
        newest = newest.group_by(_ROW.subject_name)
        query = sa.select(STATISTICS).where(_ROW.id.in_(newest))
        with self._engine.connect() as conn:
            return {r.subject_name: _run(r) for r in conn.execute(query)}

    def forget(self, subject_kind: SubjectKind, names: Sequence[str]) -> None:
        """Drop every run of the named subjects (views removed by ``feast apply``)."""
        if not names:
            return
        self.ensure_table()
        with self._engine.begin() as conn:
            conn.execute(
                sa.delete(STATISTICS).where(
                    (_ROW.project == self._project)
                    & (_ROW.subject_kind == subject_kind)
                    & _ROW.subject_name.in_(list(names))
                )
            )
