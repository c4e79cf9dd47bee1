"""Alembic migrations for the offline store's tables (see ``offline_store.datasets.upgrade``)."""
