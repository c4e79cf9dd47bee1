"""``POST /get-online-features``: Feast's request and response JSON, on the fast path."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import Response

from service.deps import ServiceState
from service.errors import InvalidRequestError, RequestTooLargeError
from service.online import OnlinePlan, check_entities, compile_plan, read_online
from service.schemas import ErrorResponse, GetOnlineFeaturesRequest, OnlineFeaturesResponse

router = APIRouter(tags=["online"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (404, 413, 422, 503)
}


def _plan(state: ServiceState, req: GetOnlineFeaturesRequest) -> OnlinePlan:
    if req.feature_service is not None and req.features:
        raise InvalidRequestError(
            'give either "features" or "feature_service", not both',
        )
    if req.feature_service is None and not req.features:
        raise InvalidRequestError(
            'no features requested; set "features" to ["<view>:<feature>", ...] or '
            '"feature_service" to a feature service name'
        )
    limit = state.settings.max_features_per_request
    if len(req.features) > limit:
        raise RequestTooLargeError(
            f"{len(req.features)} features in one request; the limit is {limit} "
            "(FEATURESTORE_MAX_FEATURES_PER_REQUEST)",
            limit=limit,
        )
    snapshot = state.catalog.snapshot
    key = (req.feature_service, tuple(req.features), req.full_feature_names)
    return snapshot.plans.get_or_build(  # type: ignore[no-any-return]
        key,
        lambda: compile_plan(
            snapshot,
            features=req.features,
            feature_service=req.feature_service,
            full_feature_names=req.full_feature_names,
        ),
    )


@router.post(
    "/get-online-features",
    summary="Read the latest feature values for entities",
    response_class=Response,
    responses={200: {"model": OnlineFeaturesResponse, "description": "Feast's JSON"}, **_ERRORS},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": GetOnlineFeaturesRequest.model_json_schema()}
            },
        }
    },
)
async def get_online_features(request: Request) -> Response:
    """Same JSON as ``feast serve``; statuses follow the view TTL and missing entities.

    Columns come back in ``metadata.feature_names`` order: join keys first, then the
    features. Statuses: ``PRESENT``, ``NULL_VALUE`` (stored null), ``NOT_FOUND`` (no row
    for the entity), ``OUTSIDE_MAX_AGE`` (older than the view's TTL; value null).
    """
    # The hot path skips FastAPI's dependency and body machinery (together they cost more
    # than the Redis read at one entity): state straight from the app, body parsed by
    # pydantic-core's JSON parser.
    state: ServiceState = request.app.state.services
    try:
        req = GetOnlineFeaturesRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None
    plan = _plan(state, req)
    check_entities(plan, req.entities, max_rows=state.settings.max_entities_per_request)
    body = await read_online(
        plan,
        state.redis,
        req.entities,
        full_feature_names=req.full_feature_names,
        observe_redis=state.metrics.redis_observer("read"),
    )
    return Response(body, media_type="application/json")
