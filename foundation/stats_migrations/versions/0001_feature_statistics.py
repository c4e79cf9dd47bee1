"""Feature statistics, one row per (subject, split, run).

Revision ID: stats_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "stats_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "featurestore_statistics",
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
    op.create_index(
        "ix_statistics_subject",
        "featurestore_statistics",
        ["project", "subject_kind", "subject_name", "computed_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_statistics_subject", table_name="featurestore_statistics")
    op.drop_table("featurestore_statistics")
