"""``POST /get-online-features``: Feast's request and response JSON.

The same handler, :func:`answer`, serves two entrances: this FastAPI route (which
also documents the endpoint in OpenAPI) and :class:`service.fastpath.OnlineFastPath`,
the ASGI shortcut that production traffic takes (see its module docstring).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from foundation.errors import InvalidEntityError, InvalidRequestError, RequestTooLargeError
from service.deps import ServiceState
from service.entity_values import coerce_entities
from service.online import OnlinePlan, compile_plan, read_online
from service.schemas import ErrorResponse, GetOnlineFeaturesRequest, OnlineFeaturesResponse

router = APIRouter(tags=["online"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (404, 413, 422, 503)
}


_FIELDS = frozenset(GetOnlineFeaturesRequest.model_fields)
_LONG_NUMBER = re.compile(rb"\d{20}").search


class _Request:
    """A request body that passed :func:`_parse_simple` (the attributes the handler uses)."""

    __slots__ = (
        "entities",
        "feature_service",
        "features",
        "full_feature_names",
        "include_feature_view_version_metadata",
    )

    def __init__(self, body: dict[str, Any]) -> None:
        self.entities: dict[str, list[Any]] = body["entities"]
        self.features: list[str] = body.get("features", [])
        self.feature_service: str | None = body.get("feature_service")
        self.full_feature_names: bool = body.get("full_feature_names", False)
        self.include_feature_view_version_metadata: bool = body.get(
            "include_feature_view_version_metadata", False
        )


def _parse_simple(body: bytes) -> _Request | None:
    """The request, when the body is plainly well-formed; None sends it to pydantic.

    Only bodies whose every field already has its exact type (no coercion, no unknown
    field, nothing orjson refuses) are taken here; those are the bodies on which the
    pydantic model would produce the same values. Anything else, including every
    invalid body, goes through the model, so errors stay pydantic's.
    """
    if _LONG_NUMBER(body) is not None:
        return None  # orjson reads integers past 64 bits as floats; pydantic keeps them
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or not data.keys() <= _FIELDS:
        return None
    entities = data.get("entities")
    if type(entities) is not dict or not all(type(v) is list for v in entities.values()):
        return None
    features = data.get("features", [])
    if type(features) is not list or not all(type(f) is str for f in features):
        return None
    service = data.get("feature_service")
    if service is not None and type(service) is not str:
        return None
    if type(data.get("full_feature_names", False)) is not bool:
        return None
    if type(data.get("include_feature_view_version_metadata", False)) is not bool:
        return None
    return _Request(data)


def _plan(state: ServiceState, req: GetOnlineFeaturesRequest | _Request) -> OnlinePlan:
    # As in ``feast serve``: a (non-empty) feature service wins over ``features``.
    service = req.feature_service or None
    features: tuple[str, ...] = () if service is not None else tuple(req.features)
    if service is None and not features:
        raise InvalidRequestError(
            'no features requested; set "features" to ["<view>:<feature>", ...] or '
            '"feature_service" to a feature service name'
        )
    limit = state.settings.max_features_per_request
    if len(features) > limit:
        raise RequestTooLargeError(
            f"{len(features)} features in one request; the limit is {limit} "
            "(FEATURESTORE_MAX_FEATURES_PER_REQUEST)",
            limit=limit,
        )
    snapshot = state.catalog.snapshot
    key = (service, features, req.full_feature_names)
    return cast(
        OnlinePlan,
        snapshot.plans.get_or_build(
            key,
            lambda: compile_plan(
                snapshot,
                features=features,
                feature_service=service,
                full_feature_names=req.full_feature_names,
            ),
        ),
    )


def check_entities(plan: OnlinePlan, entities: Mapping[str, Any], *, max_rows: int) -> int:
    """Validate the shape of ``entities`` against a plan.

    Returns:
        The number of entity rows.

    Raises:
        InvalidEntityError: missing join keys or request data, ragged columns.
        RequestTooLargeError: more rows than ``max_rows``.
    """
    missing = sorted(plan.join_keys - entities.keys())
    if missing:
        # A join key map's column: say which projection reads which join key from it.
        mapped = "; ".join(plan.key_sources[k] for k in missing if k in plan.key_sources)
        raise InvalidEntityError(
            f"missing join key(s) {missing} in entities; the requested features are keyed by "
            f"{sorted(plan.join_keys)}{f' ({mapped})' if mapped else ''}; add a list of "
            "values for each",
            missing=missing,
        )
    missing = sorted(plan.request_fields - entities.keys())
    if missing:
        raise InvalidEntityError(
            f"missing request data {missing} for the requested on-demand features; pass them "
            "in entities alongside the join keys, one value per row",
            missing=missing,
        )
    lengths = {
        k: len(v) for k, v in entities.items() if k in plan.echo_keys or k in plan.request_fields
    }
    if plan.entityless and not lengths:
        raise InvalidEntityError(
            "the requested features are all from entity-less feature views, so the number "
            "of rows comes from the entities: give at least one entity column, e.g. "
            '{"driver_id": [1001]}',
            missing=["<any join key>"],
        )
    n = next(iter(lengths.values()), 0)
    if any(length != n for length in lengths.values()):
        raise InvalidEntityError(
            f"entity columns have different lengths {lengths}; give every join key and "
            "request field one value per entity row",
            lengths=lengths,
        )
    if n > max_rows:
        raise RequestTooLargeError(
            f"{n} entity rows in one request; the limit is {max_rows} "
            "(FEATURESTORE_MAX_ENTITIES_PER_REQUEST); split the request",
            limit=max_rows,
        )
    return n


async def answer(state: ServiceState, body: bytes) -> bytes:
    """Parse a request body, look the features up, return Feast's JSON.

    Args:
        state: the worker's service state.
        body: the raw request body.

    Returns:
        The response body.

    Raises:
        pydantic.ValidationError: malformed JSON or fields (mapped to 422).
        FeatureStoreError: unknown names, bad entities, limits, Redis down.
    """
    # Plain well-formed bodies: orjson and exact type checks; anything else is parsed
    # and validated (with its errors) by pydantic-core straight from bytes.
    req = _parse_simple(body) or GetOnlineFeaturesRequest.model_validate_json(body)
    plan = _plan(state, req)
    entities = coerce_entities(plan.entity_forms, req.entities)
    rows = check_entities(plan, entities, max_rows=state.settings.max_entities_per_request)
    return await read_online(
        plan,
        state.reader,
        entities,
        rows=rows,
        full_feature_names=req.full_feature_names,
        udfs=state.udfs,
        include_view_metadata=req.include_feature_view_version_metadata,
        observe_redis=state.metrics.redis_observer("read"),
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
    state: ServiceState = request.app.state.services
    return Response(await answer(state, await request.body()), media_type="application/json")
