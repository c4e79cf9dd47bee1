"""Alembic migrations for the online layer's tables (see ``online_store.freshness``)."""
