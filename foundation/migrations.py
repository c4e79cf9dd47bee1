"""Alembic upgrades for our own tables, which live next to Feast's SQL registry.

Each layer that owns tables (the service's API keys, the offline store's saved datasets,
the engine's freshness records) keeps its own migration folder with its own version
table, so the three histories never collide in the shared database.
"""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa

# Alembic's `context` is one module-level proxy: two upgrades in one process at once
# would configure each other's environment.
_LOCK = threading.Lock()


def upgrade_schema(engine: sa.Engine, migrations: Path) -> None:
    """Create or migrate the tables of one migration folder to its latest revision.

    Args:
        engine: the registry database.
        migrations: the folder holding ``env.py`` and ``versions/``.
    """
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations))
    with _LOCK, engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
