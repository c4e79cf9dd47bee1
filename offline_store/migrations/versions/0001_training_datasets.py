"""Saved training datasets table.

Revision ID: offline_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "offline_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fs_training_datasets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("feature_service", sa.String(255), nullable=True),
        sa.Column("full_feature_names", sa.Boolean, nullable=False),
        sa.Column("entity_fingerprint", sa.String(64), nullable=False),
        sa.Column("row_count", sa.BigInteger, nullable=False),
        sa.Column("min_event_timestamp", sa.DateTime(timezone=True), nullable=True),
        sa.Column("max_event_timestamp", sa.DateTime(timezone=True), nullable=True),
        sa.Column("storage_path", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("project", "name", "version", name="uq_dataset_version"),
    )
    op.create_index("ix_training_datasets_name", "fs_training_datasets", ["project", "name"])


def downgrade() -> None:
    op.drop_index("ix_training_datasets_name", table_name="fs_training_datasets")
    op.drop_table("fs_training_datasets")
