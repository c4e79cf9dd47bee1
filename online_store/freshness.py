"""The newest event time materialized per feature view, recorded next to Feast's registry.

Feast records the windows it materialized, not what they held: a view materialized up to
now whose source stopped receiving rows a day ago looks fresh by its intervals. So the
engine records, per (project, feature view), the greatest event time among the rows of each
window it wrote, keeping the maximum across runs. That is what Redis holds when our engine
is the only batch writer (a row skipped because Redis already had a newer one leaves Redis
newer still, so the record never claims more than is there). The service reads the records
with each registry snapshot for its ``featurestore_feature_view_freshness_seconds`` gauge.

Table ``featurestore_view_freshness``, created by the migrations in
``online_store/migrations`` (version table ``featurestore_online_alembic_version``). A view
that ``feast apply`` removes loses its record, as its rows leave Redis.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from foundation.migrations import upgrade_schema

VERSION_TABLE = "featurestore_online_alembic_version"
# The newest revision in online_store/migrations (a test keeps the two in step). A
# database already there skips Alembic, whose import and check cost ~0.1 s per process.
HEAD_REVISION = "0001_view_freshness"


# A Core table rather than an ORM model: `feast materialize` imports this module, and
# sqlalchemy.orm would add ~50 ms to every run for four columns.
METADATA = sa.MetaData()
FRESHNESS = sa.Table(
    "featurestore_view_freshness",
    METADATA,
    sa.Column("project", sa.String(255), primary_key=True),
    sa.Column("feature_view", sa.String(255), primary_key=True),
    sa.Column("newest_event_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
_ROW = FRESHNESS.c


def _utc(value: datetime) -> datetime:
    # SQLite hands DateTime columns back naive; everything stored is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class FreshnessLog:
    """The freshness records of one project.

    Creates its table (idempotent migrations) on first use, so a registry that predates
    the table needs no separate step.

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
        """Create or migrate the table if needed (cheap once it is at the head revision)."""
        if self._ready:
            return
        migrations = Path(__file__).with_name("migrations")
        with self._lock:
            if not self._ready and self._at_head():
                self._ready = True
            if not self._ready:
                try:
                    upgrade_schema(self._engine, migrations)
                except sa.exc.SQLAlchemyError:
                    # Another process created the table between our check and our CREATE;
                    # the second attempt finds it at the latest revision.
                    upgrade_schema(self._engine, migrations)
                self._ready = True

    def _at_head(self) -> bool:
        try:
            with self._engine.connect() as conn:
                version = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))
                return [row[0] for row in version] == [HEAD_REVISION]
        except sa.exc.SQLAlchemyError:  # no version table yet
            return False

    def record(self, feature_view: str, newest_event: datetime) -> None:
        """Raise the view's newest event time to ``newest_event`` (never lower it).

        Args:
            feature_view: the view written.
            newest_event: the greatest event time among the rows just written (naive = UTC);
                clamped to the current time.
        """
        self.ensure_table()
        # Never past the recording time: a source row stamped in the future (fed to a
        # plain `feast materialize`) would otherwise hold the gauge at "fresh" for good.
        newest = min(_utc(newest_event), datetime.now(UTC))
        mine = (_ROW.project == self._project) & (_ROW.feature_view == feature_view)
        raise_to = sa.update(FRESHNESS).where(mine)
        raise_to = raise_to.values(
            newest_event_at=sa.case(
                (_ROW.newest_event_at < newest, newest), else_=_ROW.newest_event_at
            ),
            updated_at=datetime.now(UTC),
        )
        # Update, else insert; a concurrent first insert makes ours fail, then update wins.
        for _ in range(3):
            with self._engine.begin() as conn:
                if conn.execute(raise_to).rowcount:
                    return
            try:
                with self._engine.begin() as conn:
                    conn.execute(
                        sa.insert(FRESHNESS).values(
                            project=self._project,
                            feature_view=feature_view,
                            newest_event_at=newest,
                            updated_at=datetime.now(UTC),
                        )
                    )
                return
            except IntegrityError:
                continue

    def newest_events(self) -> dict[str, datetime]:
        """Every recorded view of the project and its newest materialized event time (UTC)."""
        self.ensure_table()
        query = sa.select(_ROW.feature_view, _ROW.newest_event_at).where(
            _ROW.project == self._project
        )
        with self._engine.connect() as conn:
            return {view: _utc(newest) for view, newest in conn.execute(query)}

    def forget(self, feature_views: Iterable[str]) -> None:
        """Drop the records of views that no longer exist."""
        names = list(feature_views)
        if not names:
            return
        self.ensure_table()
        with self._engine.begin() as conn:
            conn.execute(
                sa.delete(FRESHNESS).where(
                    (_ROW.project == self._project) & _ROW.feature_view.in_(names)
                )
            )
