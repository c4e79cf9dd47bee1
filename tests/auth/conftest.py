"""Reuse the service tests' session repo (real Redis, SQLite registry, materialized data)."""

from tests.service.conftest import repo, service_redis

__all__ = ["repo", "service_redis"]
