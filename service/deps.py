"""Request-scoped access to the app's long-lived objects, as ``Annotated`` aliases.

Routers declare what they need (``snapshot: SnapshotDep``) and never reach into
``app.state`` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request
from feast import FeatureStore
from redis import Redis as SyncRedis

from service.catalog import Catalog, RegistrySnapshot
from service.jobs import JobManager
from service.metrics import Metrics
from service.redis_fast import FastRedis
from service.settings import Settings


@dataclass(slots=True)
class ServiceState:
    """Everything the lifespan opens; one per worker process."""

    settings: Settings
    store: FeatureStore
    catalog: Catalog
    redis: aioredis.Redis  # bookkeeping (jobs, readiness); RedisCluster on a cluster
    reader: FastRedis | aioredis.RedisCluster  # lookups
    redis_sync: SyncRedis  # blocking writes in threads; RedisCluster on a cluster
    redis_url: str
    metrics: Metrics
    jobs: JobManager


async def get_state(request: Request) -> ServiceState:
    """The worker's :class:`ServiceState` (set by the lifespan)."""
    # async: FastAPI runs plain `def` dependencies in a thread pool, a hop per request.
    state: ServiceState = request.app.state.services
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    """The service settings."""
    return state.settings


async def get_catalog(state: StateDep) -> Catalog:
    """The registry catalog (snapshot + refresh state)."""
    return state.catalog


async def get_snapshot(state: StateDep) -> RegistrySnapshot:
    """The current registry snapshot (503 if the registry was never read)."""
    return state.catalog.snapshot


async def get_redis(state: StateDep) -> aioredis.Redis:
    """The asyncio Redis client for bookkeeping (jobs, readiness)."""
    return state.redis


async def get_metrics(state: StateDep) -> Metrics:
    """The Prometheus metrics of this worker."""
    return state.metrics


async def get_jobs(state: StateDep) -> JobManager:
    """The materialization job manager."""
    return state.jobs


async def get_store(state: StateDep) -> FeatureStore:
    """The Feast store of the repo."""
    return state.store


SettingsDep = Annotated[Settings, Depends(get_settings)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
SnapshotDep = Annotated[RegistrySnapshot, Depends(get_snapshot)]
RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
StoreDep = Annotated[FeatureStore, Depends(get_store)]
