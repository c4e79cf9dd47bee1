"""API keys are checked from the headers, before a single byte of the body is read.

FastAPI reads and parses a route's JSON body before it solves the route's dependencies,
so a key check written as a dependency comes after the body: a keyless caller could
make every worker buffer bodies up to the size limit, and a malformed keyless body got
400 instead of 401. :class:`KeyCheckMiddleware` sits outside the routes and answers
401/403/503 from the ``Authorization`` header alone; the body of a refused request is
never read.

``service.app`` gives the middleware each router with the scope it mounts it under;
:func:`service.deps.require` on the same routers puts the scheme in the OpenAPI document.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as ASGIScope

from service.auth import Scope
from service.handlers import error_response

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fastapi import APIRouter

# Where the middleware leaves the verified scope for the route dependency to see.
SCOPE_KEY = "featurestore.key_scope"


class KeyCheckMiddleware:
    """Refuse requests to guarded routes whose key is missing, invalid or too weak.

    Args:
        app: the rest of the ASGI stack (the FastAPI app's own middleware and routes).
        guarded: each router with the lowest scope its routes need, as mounted.
    """

    def __init__(self, app: ASGIApp, *, guarded: Sequence[tuple[APIRouter, Scope]]) -> None:
        self.app = app
        self._table = [(route, scope) for router, scope in guarded for route in router.routes]

    def _needed(self, scope: ASGIScope) -> Scope | None:
        for route, needed in self._table:
            match, _ = route.matches(scope)
            if match is not Match.NONE:  # PARTIAL: right path, wrong method: still guarded
                return needed
        return None

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = self._needed(scope)
        auth = scope["app"].state.services.auth if needed is not None else None
        if auth is not None and needed is not None:
            try:
                scope[SCOPE_KEY] = await auth.authorize(header(scope, b"authorization"), needed)
            except Exception as exc:
                response = error_response(exc, method=scope["method"], path=scope["path"])
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def header(scope: ASGIScope, name: bytes) -> str | None:
    """The first ``name`` header of a request (the first one counts, as in the app)."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
