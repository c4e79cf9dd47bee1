"""The one place where errors become HTTP responses.

Every error leaves the service as ``{"error": {"type", "message", ...details}}``
with the status code of its class in :mod:`foundation.errors`. Request validation
errors (malformed JSON, wrong field types) are the same shape with 422, unknown
routes 404/405, and anything unexpected is logged and answered with a generic 500
that leaks nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from foundation.errors import FeatureStoreError

log = logging.getLogger(__name__)

_HTTP_TYPES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


def json_error(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    """A JSON error response (serialised once: never double-encoded)."""
    return Response(
        orjson.dumps({"error": body}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _validation_body(errors: list[Any]) -> dict[str, Any]:
    problems = []
    for err in errors:
        loc = ".".join(str(part) for part in err.get("loc", ()))
        problems.append(
            {"loc": loc, "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}
        )
    summary = "; ".join(f"{p['loc'] or 'body'}: {p['msg']}" for p in problems[:5])
    return {
        "type": "validation_error",
        "message": f"invalid request: {summary}; see /docs for the request schema",
        "errors": problems,
    }


def error_response(exc: Exception, *, method: str, path: str) -> Response:
    """Map any exception to the JSON error shape (the one mapping of the service).

    Args:
        exc: what was raised.
        method: the request method (for messages and logs).
        path: the request path (for messages and logs).

    Returns:
        The JSON error response.
    """
    if isinstance(exc, FeatureStoreError):
        if exc.status_code >= 500:
            log.warning("%s %s -> %s: %s", method, path, exc.status_code, exc)
        return json_error(exc.status_code, exc.to_dict(), headers=exc.headers or None)
    if isinstance(exc, RequestValidationError):
        return json_error(422, _validation_body(list(exc.errors())))
    if isinstance(exc, ValidationError):  # a body parsed by hand on the fast path
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        return json_error(422, _validation_body(errors))
    if isinstance(exc, StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            detail = f"no route {method} {path}; see /docs for the API"
        body = {"type": _HTTP_TYPES.get(exc.status_code, "http_error"), "message": detail}
        return json_error(exc.status_code, body, headers=dict(exc.headers or {}))
    log.exception("unhandled error on %s %s", method, path, exc_info=exc)
    return json_error(
        500,
        {"type": "internal_error", "message": "internal server error; see the server log"},
    )


async def handle_error(request: Request, exc: Exception) -> Response:
    """FastAPI exception handler: :func:`error_response` for every error class."""
    return error_response(exc, method=request.method, path=request.url.path)


def install(app: FastAPI) -> None:
    """Route every error class through :func:`handle_error`."""
    for exc_class in (
        FeatureStoreError,
        RequestValidationError,
        StarletteHTTPException,
        Exception,
    ):
        app.add_exception_handler(exc_class, handle_error)
