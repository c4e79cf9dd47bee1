"""The FastAPI application: ``create_app(settings)``.

``featurestore serve`` runs ``uvicorn.run("service.app:create_app", factory=True,
workers=N)``; each worker process builds its own app from ``FEATURESTORE_*``
environment variables, so each has its own Redis pool, registry snapshot and
refresh task. Uvicorn's default of no ``limit_max_requests`` means workers are never
recycled under load (``feast serve`` restarts its worker every ~1000 requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from foundation.errors import BackendUnavailableError
from service import handlers
from service.access import KeyCheckMiddleware
from service.auth import Authenticator, KeyStore, Scope, open_key_engine
from service.backends import (
    is_cluster,
    open_clients,
    open_feature_store,
    resolve_redis_url,
    sentinel_target,
)
from service.catalog import Catalog
from service.console import mount_console
from service.deps import ServiceState, require
from service.fastpath import OnlineFastPath
from service.insights import Insights
from service.jobs import JobManager
from service.limits import BodyLimitMiddleware
from service.metrics import Metrics, MetricsMiddleware
from service.routes import (
    keys,
    materialize,
    online,
    online_admin,
    ops,
    registry,
    statistics,
    training,
    writes,
)
from service.settings import Settings
from service.udf_runner import UdfRunner

log = logging.getLogger(__name__)

_DESCRIPTION = """
Feature server for a Feast repo. `/get-online-features`, `/push`,
`/write-to-online-store`, `/materialize` and `/materialize-incremental` accept
the same JSON as `feast serve` (Feast 0.67), so Feast HTTP clients work unchanged;
statuses are right where Feast's are not (`NOT_FOUND` for missing entities,
`OUTSIDE_MAX_AGE` past the view TTL). Every error is
`{"error": {"type", "message", ...}}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service.

    Args:
        settings: service settings; ``None`` reads them from ``FEATURESTORE_*``.

    Returns:
        The FastAPI app. Backends are opened by its lifespan; ``app.state.feature_store``
        (a :class:`feast.FeatureStore` for the repo) is available right away.
    """
    settings = settings or Settings()
    store = open_feature_store(settings)
    metrics = Metrics()
    insights = Insights(
        settings.resolved_registry_url(),
        store.project,
        drift_threshold=settings.drift_psi_threshold,
        push_window_seconds=settings.statistics_push_window_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = await asyncio.to_thread(resolve_redis_url, settings, store.config)
        reader, client, sync_client = open_clients(
            url,
            settings,
            cluster=is_cluster(store.config),
            sentinel=sentinel_target(store.config),
        )
        catalog = Catalog(
            store,
            refresh_seconds=settings.registry_refresh_seconds,
            timeout_seconds=settings.registry_timeout_seconds,
        )
        metrics.bind(catalog)
        try:
            await catalog.reload_async()
        except BackendUnavailableError as exc:
            # Start anyway: /ready says why, and the refresh loop keeps trying.
            log.warning("starting without a registry snapshot: %s", exc.message)
        jobs = JobManager(
            store=store,
            async_client=client,
            sync_client=sync_client,
            max_jobs=settings.materialize_max_jobs,
            lock_ttl_ms=int(settings.materialize_lock_ttl_seconds * 1000),
        )
        key_engine = None
        authenticator = None
        if settings.auth:
            key_engine = await asyncio.to_thread(
                open_key_engine, settings.resolved_registry_url(), settings.registry_timeout_seconds
            )
            authenticator = Authenticator(
                KeyStore(
                    key_engine,
                    project=store.project,
                    cache_seconds=settings.api_key_cache_seconds,
                ),
                timeout=settings.registry_timeout_seconds,
            )
        udfs = UdfRunner(settings.odfv_threads, metrics=metrics)
        app.state.services = ServiceState(
            settings=settings,
            store=store,
            catalog=catalog,
            redis=client,
            reader=reader,
            redis_sync=sync_client,
            redis_url=url,
            metrics=metrics,
            jobs=jobs,
            udfs=udfs,
            auth=authenticator,
        )
        # Startup leaves a large heap (Feast, pandas, protobufs); freezing it keeps the
        # full collections that would otherwise scan it out of request tail latency.
        gc.collect()
        gc.freeze()
        refresher = asyncio.create_task(catalog.refresh_forever(), name="registry-refresh")
        background = [
            asyncio.create_task(insights.pushes.flush_forever(), name="push-statistics"),
            asyncio.create_task(
                insights.drift_forever(metrics, settings.statistics_push_window_seconds),
                name="drift-gauge",
            ),
        ]
        try:
            yield
        finally:
            refresher.cancel()
            for task in background:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            jobs.shutdown()
            udfs.close()
            await client.aclose()
            if reader is not client:
                await reader.aclose()
            sync_client.close()
            if key_engine is not None:
                key_engine.dispose()
            insights.close()

    app = FastAPI(
        title="featurestore",
        version="0.1.0",
        description=_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.feature_store = store
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.insights = insights
    handlers.install(app)

    # Scopes: read < write < admin. With auth off the checks are skipped, and the
    # OpenAPI document shows no security requirement.
    def scoped(scope: Scope) -> list[Any]:
        return [require(scope)] if settings.auth else []

    guarded = [
        (online.router, Scope.READ),
        (registry.router, Scope.READ),
        (training.router, Scope.READ),
        (statistics.router, Scope.READ),
        (writes.router, Scope.WRITE),
        (statistics.compute_router, Scope.WRITE),
        (materialize.router, Scope.ADMIN),
        (online_admin.router, Scope.ADMIN),
    ]
    if settings.auth:
        guarded.append((keys.router, Scope.ADMIN))
    for router, scope in guarded:
        app.include_router(router, dependencies=scoped(scope))
    app.include_router(ops.router)
    mount_console(app)
    # Added last = outermost: metrics see every response, including 413s and 401s; keys
    # are checked before the body limit and before any body is read.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.auth:
        app.add_middleware(KeyCheckMiddleware, guarded=guarded)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def create_server_app() -> FastAPI | OnlineFastPath:
    """The ASGI app of ``featurestore serve`` (a uvicorn factory; settings from the env).

    Lookups are answered in front of FastAPI (:class:`service.fastpath.OnlineFastPath`)
    unless ``FEATURESTORE_LOOKUP_SHORTCUT=false``.
    """
    app = create_app()
    return OnlineFastPath(app) if app.state.settings.lookup_shortcut else app
