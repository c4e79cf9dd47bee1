"""Alembic migrations for the service's own tables (API keys), next to the Feast registry.

Run with :func:`service.auth.upgrade`; no ``alembic.ini`` is needed. The version is
kept in its own table so other layers' migration histories in the same database do
not collide with this one.
"""
