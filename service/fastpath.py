"""The ASGI shortcut for ``POST /get-online-features``.

At one entity the Redis read takes tens of microseconds, and FastAPI's routing,
middleware stack, ``Request`` object and dependency solving cost several times
that. This outermost middleware answers the lookup route directly: it reads the
body (enforcing the size limit), calls the same :func:`service.routes.online.answer`
as the FastAPI route after the same API key check, maps errors with the service's one mapping
(:func:`service.handlers.error_response`) and records the same metrics. Every other
request goes through FastAPI untouched; the FastAPI route stays for OpenAPI and
for apps mounted without this middleware.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as ASGIScope

from foundation.errors import RequestTooLargeError
from service.access import header
from service.auth import Scope
from service.handlers import error_response
from service.routes.online import answer

if TYPE_CHECKING:
    from fastapi import FastAPI

    from service.deps import ServiceState

PATH = "/get-online-features"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one connection of ``featurestore serve`` may cost (see ``Settings``).

    Attributes:
        max_header_bytes: request line plus headers; more is answered 431 and closed.
        header_timeout_seconds: a request head must arrive within this time (408, closed).
        max_connections: open connections per worker; more are answered 503 and closed.
    """

    max_header_bytes: int = 32 * 1024
    header_timeout_seconds: float = 10.0
    max_connections: int = 4096


_JSON = (b"content-type", b"application/json")


class OnlineFastPath:
    """Serve ``POST /get-online-features`` without FastAPI's per-request machinery.

    Args:
        app: the rest of the ASGI stack.
        max_body_bytes: the request body limit (413 above it).
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def _body(self, scope: ASGIScope, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        await self.serve(scope["app"].state.services, scope, receive, send)

    async def serve(
        self, state: ServiceState, scope: ASGIScope, receive: Receive, send: Send
    ) -> None:
        """Answer one ``POST /get-online-features``: auth, body, lookup, errors, metrics."""
        started = time.perf_counter()
        status, headers, body = await respond(
            state, header(scope, b"authorization"), lambda: self._body(scope, receive)
        )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        state.metrics.observe_request(PATH, "POST", status, time.perf_counter() - started)


async def respond(
    state: ServiceState,
    authorization: str | None,
    body: bytes | Callable[[], Awaitable[bytes]],
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The whole answer to one lookup: status, headers and body, errors mapped.

    Both entrances use it: :class:`OnlineFastPath` (ASGI) and
    :class:`service.http_lookup.LookupProtocol` (in the HTTP protocol). The API key is
    checked before the body is read when ``body`` is a function reading it.

    Args:
        state: the worker's service state.
        authorization: the ``Authorization`` header, if any.
        body: the request body, or a function reading it (which may raise 413).
    """
    try:
        if state.auth is not None:
            await state.auth.authorize(authorization, Scope.READ)
        raw = body if isinstance(body, bytes) else await body()
        payload = await answer(state, raw)
        return 200, [_JSON, (b"content-length", b"%d" % len(payload))], payload
    except Exception as exc:
        response = error_response(exc, method="POST", path=PATH)
        return response.status_code, response.raw_headers, bytes(response.body)


class ServerFastPath:
    """What ``featurestore serve`` runs: the app, with lookups answered in front of it.

    Inside the FastAPI app, :class:`OnlineFastPath` still sits behind FastAPI's own
    per-request layers (its OpenTelemetry check, server-error, exception-telemetry and
    body-limit middlewares), which at one entity cost about as much as the lookup. This
    wrapper, outermost in the server, hands lookups straight to the same
    :meth:`OnlineFastPath.serve` (same auth, limit, errors and metrics). When FastAPI's
    native telemetry is active (an OpenTelemetry provider is configured; checked at most
    once a second), lookups go through the app instead, so they are traced as before.

    Args:
        app: the FastAPI app from :func:`service.app.create_app`.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.state = app.state
        self.inner = OnlineFastPath(app, max_body_bytes=app.state.settings.max_body_bytes)
        self._telemetry = getattr(app, "_native_telemetry", None)
        self._telemetry_on = True
        self._telemetry_checked = -1.0

    def _telemetry_active(self) -> bool:
        now = time.monotonic()
        if now - self._telemetry_checked >= 1.0:
            self._telemetry_checked = now
            telemetry = self._telemetry
            self._telemetry_on = bool(telemetry is not None and telemetry.enabled())
        return self._telemetry_on

    @property
    def limits(self) -> ConnectionLimits:
        """The per-connection limits from the app's settings."""
        settings = self.state.settings
        return ConnectionLimits(
            max_header_bytes=settings.max_header_bytes,
            header_timeout_seconds=settings.header_timeout_seconds,
            max_connections=settings.max_connections,
        )

    @property
    def max_body_bytes(self) -> int:
        """The request body limit (413 above it)."""
        return self.inner.max_body_bytes

    def direct_state(self) -> ServiceState | None:
        """The service state when lookups may skip the app, else None.

        None while the lifespan has not finished, under a root path, or while
        FastAPI's native telemetry is active (lookups then go through the app).
        """
        if self.app.root_path or self._telemetry_active():
            return None
        return getattr(self.state, "services", None)

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        state = None
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST":
            state = self.direct_state()
        if state is None:
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app
        await self.inner.serve(state, scope, receive, send)


def _too_large(limit: int) -> RequestTooLargeError:
    return RequestTooLargeError(
        f"request body is larger than {limit} bytes (FEATURESTORE_MAX_BODY_BYTES); "
        "split it into smaller requests",
        limit=limit,
    )
