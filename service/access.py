"""API keys are checked from the headers, before a single byte of the body is read.

FastAPI reads and parses a route's JSON body before it solves the route's dependencies,
so a key check written as a dependency comes after the body: a keyless caller could
make every worker buffer bodies up to the size limit, and a malformed keyless body got
400 instead of 401. :class:`KeyCheckMiddleware` sits outside the routes and answers
401/403/503 from the ``Authorization`` header alone; the body of a refused request is
never read.

Which scope a route needs is declared once, with :func:`service.deps.require` on its
router; the middleware reads those declarations from the app's routes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as ASGIScope

from service.auth import Scope
from service.handlers import error_response

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

# Where the middleware leaves the verified scope for the route dependency to see.
SCOPE_KEY = "featurestore.key_scope"


def required_scope(route: BaseRoute) -> Scope | None:
    """The lowest key scope ``route`` needs, from its ``require(...)`` dependencies."""
    needed = [
        getattr(dep.dependency, "required_scope", None)
        for dep in getattr(route, "dependencies", ())
    ]
    scopes = [s for s in needed if isinstance(s, Scope)]
    return max(scopes) if scopes else None


class KeyCheckMiddleware:
    """Refuse requests to protected routes whose key is missing, invalid or too weak.

    Args:
        app: the rest of the ASGI stack (the FastAPI app's own middleware and routes).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._table: list[tuple[BaseRoute, Scope]] | None = None

    def _needed(self, scope: ASGIScope) -> Scope | None:
        if self._table is None:
            routes = scope["app"].router.routes
            self._table = [(r, s) for r in routes if (s := required_scope(r)) is not None]
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
            authorization = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                    break  # the first one counts
            try:
                scope[SCOPE_KEY] = await auth.authorize(authorization, needed)
            except Exception as exc:
                response = error_response(exc, method=scope["method"], path=scope["path"])
                if _has_body(scope):
                    # The body stays unread; closing spares reading it only to drop it.
                    response.headers["connection"] = "close"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _has_body(scope: ASGIScope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False
