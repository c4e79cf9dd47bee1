"""The web console at ``/ui``: static HTML, JavaScript and CSS shipped in the package.

The page holds no data: it asks for an API key once, keeps it in the tab's
``sessionStorage`` and sends it as ``Authorization: Bearer`` to the read-scope JSON routes
(``/registry/...``, ``/statistics/...``). The key never goes into a URL, so it cannot reach
access logs or the Referer header. A strict Content-Security-Policy keeps the page to this
origin: no CDN, no inline script, nothing fetched from anywhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Header, Request
from pydantic import BaseModel, Field
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

from foundation.errors import FeatureStoreError
from service.auth import Scope

STATIC = Path(__file__).with_name("console_static")
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


class _ConsoleFiles(StaticFiles):
    async def get_response(self, path: str, scope: object) -> Response:  # type: ignore[override]
        response = await super().get_response(path, scope)  # type: ignore[arg-type]
        response.headers.update(HEADERS)
        return response


class ConsoleSession(BaseModel):
    """Whether the service wants a key, and whether the one sent (if any) can read."""

    auth_required: bool
    key_accepted: bool = Field(description="True when no key is needed or the key can read.")
    message: str = ""


def mount_console(app: FastAPI) -> None:
    """Serve the console at ``/ui`` (page) and ``/ui/static/...`` (assets)."""

    @app.get("/ui", include_in_schema=False)
    async def console_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=HEADERS)

    @app.get("/ui/session", tags=["console"], summary="Check a console key")
    async def console_session(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> ConsoleSession:
        """Answers 200 either way, so a mistyped key is a message in the page rather than a
        401 in the browser console; the data routes still check every request."""
        auth = request.app.state.services.auth
        if auth is None:
            return ConsoleSession(auth_required=False, key_accepted=True)
        if not authorization:
            return ConsoleSession(auth_required=True, key_accepted=False)
        try:
            await auth.authorize(authorization, Scope.READ)
        except FeatureStoreError as exc:
            return ConsoleSession(auth_required=True, key_accepted=False, message=exc.message)
        return ConsoleSession(auth_required=True, key_accepted=True)

    app.mount("/ui/static", _ConsoleFiles(directory=STATIC), name="console-static")
