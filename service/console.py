"""The web console at ``/ui``: static HTML, JavaScript and CSS shipped in the package.

The page holds no data: it asks for an API key once, keeps it in the tab's
``sessionStorage`` and sends it as ``Authorization: Bearer`` to the read-scope JSON routes
(``/registry/...``, ``/statistics/...``). The key never goes into a URL, so it cannot reach
access logs or the Referer header. A strict Content-Security-Policy keeps the page to this
origin: no CDN, no inline script, nothing fetched from anywhere else.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

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


def mount_console(app: FastAPI) -> None:
    """Serve the console at ``/ui`` (page) and ``/ui/static/...`` (assets)."""

    @app.get("/ui", include_in_schema=False)
    async def console_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=HEADERS)

    app.mount("/ui/static", _ConsoleFiles(directory=STATIC), name="console-static")
