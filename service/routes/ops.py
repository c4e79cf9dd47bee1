"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Header
from starlette.responses import Response

from foundation.errors import BackendUnavailableError, FeatureStoreError
from service.auth import Scope
from service.deps import ServiceState, StateDep
from service.metrics import CONTENT_TYPE
from service.schemas import ErrorResponse, HealthResponse, ReadyResponse, StrangerReadyResponse

router = APIRouter(tags=["operations"])
log = logging.getLogger(__name__)


@router.get("/health", summary="Liveness: the process answers")
async def health() -> HealthResponse:
    """Always 200 while the process runs; use ``/ready`` for backend checks."""
    return HealthResponse()


async def _may_see_details(state: ServiceState, authorization: str | None) -> bool:
    """Backend details are for callers with a key (anyone when auth is off: loopback)."""
    if state.auth is None:
        return True
    try:
        await state.auth.authorize(authorization, Scope.READ)
    except FeatureStoreError:
        return False
    return True


@router.get(
    "/ready",
    summary="Readiness: Redis and the registry are reachable",
    responses={503: {"model": ErrorResponse}},
)
async def ready(
    state: StateDep, authorization: Annotated[str | None, Header()] = None
) -> ReadyResponse | StrangerReadyResponse:
    """200 when Redis answers PING and the registry can be queried; else 503.

    Without a valid key (when auth is on) the answer says ready or not and nothing
    else: backend errors name hosts and ports, which strangers do not need.
    """
    timeout = state.settings.redis_timeout_seconds
    try:
        await asyncio.wait_for(state.redis.ping(), timeout)  # type: ignore[arg-type]
        redis_status = "ok"
    except Exception as exc:
        redis_status = f"unreachable: {type(exc).__name__}: {exc}"
    store = state.store
    try:
        await asyncio.wait_for(
            asyncio.to_thread(store.registry.get_project, store.project, allow_cache=False),
            max(timeout, 5.0),
        )
        registry_status = "ok" if state.catalog.last_success_monotonic else "not loaded yet"
    except Exception as exc:
        registry_status = f"unreachable: {type(exc).__name__}: {exc}"
    age = state.catalog.age_seconds()
    age_value = None if age == float("inf") else round(age, 3)
    ok = redis_status == "ok" and registry_status == "ok"
    if not ok:
        log.warning("not ready: redis %s; registry %s", redis_status, registry_status)
    if not await _may_see_details(state, authorization):
        if not ok:
            raise BackendUnavailableError("not ready; retry shortly")
        return StrangerReadyResponse(status="ready")
    if not ok:
        raise BackendUnavailableError(
            f"not ready: redis {redis_status}; registry {registry_status}",
            redis=redis_status,
            registry=registry_status,
            registry_age_seconds=age_value,
        )
    return ReadyResponse(
        status="ready", redis=redis_status, registry=registry_status, registry_age_seconds=age_value
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(state: StateDep) -> Response:
    """Requests and latency by route and status, Redis latency, registry age, freshness."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
