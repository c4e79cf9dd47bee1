"""Request-scoped access to the app's long-lived objects, as ``Annotated`` aliases.

Routers declare what they need (``snapshot: SnapshotDep``) and never reach into
``app.state`` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from feast import FeatureStore
from redis import Redis as SyncRedis

from service.access import SCOPE_KEY
from service.auth import Authenticator, Scope
from service.catalog import Catalog, RegistrySnapshot
from service.insights import Insights
from service.jobs import JobManager
from service.metrics import Metrics
from service.redis_fast import FastRedis
from service.settings import Settings
from service.udf_runner import UdfRunner


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
    udfs: UdfRunner  # on-demand transformations: their threads and records
    auth: Authenticator | None = None  # None: auth off (loopback development)


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


async def get_insights(request: Request) -> Insights:
    """Statistics, saved datasets and drift (set up by ``create_app``)."""
    insights: Insights = request.app.state.insights
    return insights


SettingsDep = Annotated[Settings, Depends(get_settings)]
InsightsDep = Annotated[Insights, Depends(get_insights)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
SnapshotDep = Annotated[RegistrySnapshot, Depends(get_snapshot)]
RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
StoreDep = Annotated[FeatureStore, Depends(get_store)]


# auto_error=False: a missing header must become our own 401 body, not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="An API key from `featurestore keys create`.")


def require(scope: Scope) -> object:
    """A router dependency declaring the lowest key scope its routes need.

    :class:`service.access.KeyCheckMiddleware` reads the declaration and checks the key
    before the body is read; the dependency itself puts the bearer scheme in the OpenAPI
    document and checks again only if the middleware did not run.

    Args:
        scope: the lowest scope the routes need.

    Returns:
        A ``Depends(...)`` marker for ``include_router(dependencies=[...])``.
    """

    async def check(
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        state: ServiceState = request.app.state.services
        if state.auth is not None and SCOPE_KEY not in request.scope:
            await state.auth.authorize(request.headers.get("authorization"), scope)

    return Depends(check)
