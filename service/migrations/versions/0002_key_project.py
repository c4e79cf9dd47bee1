"""API keys belong to one Feast project.

Keys created before this revision have no project; they are refused until recreated
with ``featurestore keys create`` (an admin of one project must be nobody in another).

Revision ID: 0002_key_project
Revises: 0001_api_keys
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_key_project"
down_revision = "0001_api_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("featurestore_api_keys") as batch:
        batch.add_column(sa.Column("project", sa.String(200), nullable=True))
        batch.create_index("ix_featurestore_api_keys_project", ["project"])


def downgrade() -> None:
    with op.batch_alter_table("featurestore_api_keys") as batch:
        batch.drop_index("ix_featurestore_api_keys_project")
        batch.drop_column("project")
