"""Newest materialized event time per feature view.

Revision ID: 0001_view_freshness
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_view_freshness"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "featurestore_view_freshness",
        sa.Column("project", sa.String(255), primary_key=True),
        sa.Column("feature_view", sa.String(255), primary_key=True),
        sa.Column("newest_event_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("featurestore_view_freshness")
