"""Request body size limit, enforced before any handler parses the body."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from foundation.errors import RequestTooLargeError
from service.handlers import json_error


def too_large(limit: int) -> RequestTooLargeError:
    """The 413 error for a body over ``limit`` bytes."""
    return RequestTooLargeError(
        f"request body is larger than {limit} bytes (FEATURESTORE_MAX_BODY_BYTES); "
        "split it into smaller requests",
        limit=limit,
    )


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with a 413 JSON error.

    A declared ``Content-Length`` is refused up front; chunked bodies are counted as
    they arrive and fail inside the handler, where the error handler turns the
    exception into the same 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    err = too_large(self.max_bytes)
                    await json_error(err.status_code, err.to_dict())(scope, receive, send)
                    return
                break
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)
