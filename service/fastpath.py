"""The one shortcut for ``POST /get-online-features`` in ``featurestore serve``.

At one entity the Redis read takes tens of microseconds, and FastAPI's routing,
middleware stack, ``Request`` object and dependency solving cost several times that.
:class:`OnlineFastPath` is the outermost ASGI app of the server: it answers the lookup
route itself (API key check before the body is read, the body limit, the same
:func:`service.routes.online.answer` as the FastAPI route, the service's one error
mapping :func:`service.handlers.error_response`, the same metrics) and hands every other
request to the FastAPI app untouched. The FastAPI route stays for OpenAPI and for the app
used without this wrapper (in-process clients, ``FEATURESTORE_LOOKUP_SHORTCUT=false``
when lookups should pass FastAPI's own telemetry too).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from starlette.types import Message, Receive, Send
from starlette.types import Scope as ASGIScope

from service.access import header
from service.auth import Scope
from service.handlers import error_response
from service.limits import too_large
from service.routes.online import answer

if TYPE_CHECKING:
    from fastapi import FastAPI

    from service.deps import ServiceState

PATH = "/get-online-features"
log = logging.getLogger(__name__)
_JSON = (b"content-type", b"application/json")


class OnlineFastPath:
    """Serve ``POST /get-online-features`` in front of the FastAPI app.

    Args:
        app: the FastAPI app from :func:`service.app.create_app`; its lifespan sets
            ``app.state.services``, and until then lookups go through the app.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.max_body_bytes: int = app.state.settings.max_body_bytes

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        state: ServiceState | None = None
        if (
            scope["type"] == "http"
            and scope["path"] == PATH
            and scope["method"] == "POST"
            and not self.app.root_path
        ):
            state = getattr(self.app.state, "services", None)
        if state is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, headers, body = await self._respond(state, scope, receive)
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        except RuntimeError:
            # uvicorn closed the connection under this response (it answers a malformed
            # request pipelined behind it 400 and closes; uvloop then refuses the write
            # before uvicorn learns of the close): the client is gone, nothing to send.
            log.debug("POST %s: connection closed before the response", PATH)
        state.metrics.observe_request(PATH, "POST", status, time.perf_counter() - started)

    async def _respond(
        self, state: ServiceState, scope: ASGIScope, receive: Receive
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, headers and body of one lookup, errors mapped; the key checked first."""
        try:
            if state.auth is not None:
                await state.auth.authorize(header(scope, b"authorization"), Scope.READ)
            payload = await answer(state, await self._body(scope, receive))
            return 200, [_JSON, (b"content-length", b"%d" % len(payload))], payload
        except Exception as exc:
            response = error_response(exc, method="POST", path=PATH)
            return response.status_code, response.raw_headers, bytes(response.body)

    async def _body(self, scope: ASGIScope, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise too_large(limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
