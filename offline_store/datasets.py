"""Saved training datasets: who built what, from which entity rows, stored where.

One row per (name, version) in ``fs_training_datasets``, in the same database as Feast's SQL
registry, created by the Alembic migrations in ``offline_store/migrations`` (their own version
table, so they coexist with the service's migrations). The dataset itself is a Parquet file at
``storage_path``; the row records enough to find, trust and reload it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from foundation.errors import ConflictError, NotFoundError
from foundation.migrations import upgrade_schema

VERSION_TABLE = "fs_offline_alembic_version"


class Base(DeclarativeBase):
    """Declarative base for the offline store's own tables."""


class TrainingDatasetRow(Base):
    """ORM row of ``fs_training_datasets``."""

    __tablename__ = "fs_training_datasets"
    __table_args__ = (sa.UniqueConstraint("project", "name", "version", name="uq_dataset_version"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(sa.String(255))
    name: Mapped[str] = mapped_column(sa.String(255))
    version: Mapped[int] = mapped_column(sa.Integer)
    features: Mapped[list[str]] = mapped_column(sa.JSON)
    feature_service: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    full_feature_names: Mapped[bool] = mapped_column(sa.Boolean)
    entity_fingerprint: Mapped[str] = mapped_column(sa.String(64))
    row_count: Mapped[int] = mapped_column(sa.BigInteger)
    min_event_timestamp: Mapped[datetime | None] = mapped_column(
        sa.DateTime(timezone=True), nullable=True
    )
    max_event_timestamp: Mapped[datetime | None] = mapped_column(
        sa.DateTime(timezone=True), nullable=True
    )
    storage_path: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


@dataclass(frozen=True, slots=True)
class SavedDataset:
    """A saved training dataset as callers see it."""

    project: str
    name: str
    version: int
    features: list[str]
    feature_service: str | None
    full_feature_names: bool
    entity_fingerprint: str
    row_count: int
    min_event_timestamp: datetime | None
    max_event_timestamp: datetime | None
    storage_path: str
    created_at: datetime


def _utc(value: datetime | None) -> datetime | None:
    # SQLite drops the zone; every timestamp we store is UTC.
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _to_record(row: TrainingDatasetRow) -> SavedDataset:
    created = _utc(row.created_at)
    assert created is not None
    return SavedDataset(
        project=row.project,
        name=row.name,
        version=row.version,
        features=list(row.features),
        feature_service=row.feature_service,
        full_feature_names=row.full_feature_names,
        entity_fingerprint=row.entity_fingerprint,
        row_count=row.row_count,
        min_event_timestamp=_utc(row.min_event_timestamp),
        max_event_timestamp=_utc(row.max_event_timestamp),
        storage_path=row.storage_path,
        created_at=created,
    )


def upgrade(engine_or_url: sa.Engine | str) -> None:
    """Create or migrate the saved-dataset tables to the latest revision.

    Args:
        engine_or_url: the registry database (an engine or a SQLAlchemy URL).
    """
    engine = sa.create_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    try:
        upgrade_schema(engine, Path(__file__).with_name("migrations"))
    finally:
        if isinstance(engine_or_url, str):
            engine.dispose()


class DatasetCatalog:
    """Record, list and look up saved training datasets.

    Args:
        engine: the registry database; call :func:`upgrade` on it once first.
        project: the Feast project the datasets belong to.
    """

    def __init__(self, engine: sa.Engine, project: str) -> None:
        self._engine = engine
        self._project = project

    def add(
        self,
        *,
        name: str,
        features: list[str],
        feature_service: str | None,
        full_feature_names: bool,
        entity_fingerprint: str,
        row_count: int,
        min_event_timestamp: datetime | None,
        max_event_timestamp: datetime | None,
        storage_path: str,
        version: int | None = None,
    ) -> SavedDataset:
        """Record a dataset as the next version of ``name`` (or as ``version``).

        Returns:
            The stored record.

        Raises:
            ConflictError: ``version`` (or a concurrently assigned one) already exists.
        """
        for _attempt in range(3):
            try:
                with Session(self._engine) as session, session.begin():
                    row = TrainingDatasetRow(
                        project=self._project,
                        name=name,
                        version=version or self._next_version(session, name),
                        features=features,
                        feature_service=feature_service,
                        full_feature_names=full_feature_names,
                        entity_fingerprint=entity_fingerprint,
                        row_count=row_count,
                        min_event_timestamp=min_event_timestamp,
                        max_event_timestamp=max_event_timestamp,
                        storage_path=storage_path,
                        created_at=datetime.now(UTC),
                    )
                    session.add(row)
                    session.flush()
                    record = _to_record(row)
                return record
            except IntegrityError:
                if version is not None:
                    break
                # Another writer took this version number concurrently; take the next one.
        raise ConflictError(
            f"training dataset {name!r} version {version} already exists in project "
            f"{self._project!r}; omit the version to get the next one",
            name=name,
            version=version,
        )

    def _next_version(self, session: Session, name: str) -> int:
        current = session.scalar(
            sa.select(sa.func.max(TrainingDatasetRow.version)).where(
                TrainingDatasetRow.project == self._project, TrainingDatasetRow.name == name
            )
        )
        return int(current or 0) + 1

    def list(self, name: str | None = None) -> list[SavedDataset]:
        """All datasets of the project (or every version of ``name``), by name then version."""
        query = sa.select(TrainingDatasetRow).where(TrainingDatasetRow.project == self._project)
        if name is not None:
            query = query.where(TrainingDatasetRow.name == name)
        query = query.order_by(TrainingDatasetRow.name, TrainingDatasetRow.version)
        with Session(self._engine) as session:
            return [_to_record(r) for r in session.scalars(query)]

    def get(self, name: str, version: int | None = None) -> SavedDataset:
        """One dataset; the latest version when ``version`` is None.

        Raises:
            NotFoundError: no such dataset or version.
        """
        query = sa.select(TrainingDatasetRow).where(
            TrainingDatasetRow.project == self._project, TrainingDatasetRow.name == name
        )
        if version is not None:
            query = query.where(TrainingDatasetRow.version == version)
        query = query.order_by(TrainingDatasetRow.version.desc()).limit(1)
        with Session(self._engine) as session:
            row = session.scalars(query).first()
            if row is None:
                which = f"version {version} of " if version is not None else ""
                raise NotFoundError(
                    f"no {which}training dataset {name!r} in project {self._project!r}; "
                    "list them with list_training_datasets()",
                    name=name,
                    version=version,
                )
            return _to_record(row)
