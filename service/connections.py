"""Per-connection limits of ``featurestore serve``, in front of uvicorn's HTTP protocol.

uvicorn's httptools protocol has no limit on the size of a request head, no deadline for
one, and no cap on open connections. :class:`GuardedHttpProtocol` adds them without
touching uvicorn's internals: uvicorn accepts any ``asyncio.Protocol`` class as its
``http=`` option and builds one per connection; this one builds uvicorn's own
httptools protocol beside it and hands it every transport event through asyncio's public
protocol interface. In between it watches the byte stream with its own
``httptools.HttpRequestParser`` (which sees where each request head begins and ends)
and, before uvicorn's parser keeps anything:

- a connection beyond ``max_connections`` per worker is answered 503 and closed;
- a head larger than ``max_header_bytes`` is answered 431 and closed;
- a head not complete within ``header_timeout_seconds`` of its first byte (or of the
  connection opening) is answered 408 and closed.

Idle keep-alive connections between requests are uvicorn's (``timeout_keep_alive``).
Each refusal is a JSON error body like every other error of the service.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

import httptools
import orjson
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from service.settings import Settings


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


@functools.cache
def _limits() -> ConnectionLimits:
    # Read once per worker process, from the same FEATURESTORE_* environment the app reads.
    settings = Settings()
    return ConnectionLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout_seconds=settings.header_timeout_seconds,
        max_connections=settings.max_connections,
    )


_OPEN: set[GuardedHttpProtocol] = set()  # this worker's open connections
_KINDS = {408: "request_timeout", 431: "headers_too_large", 503: "overloaded"}


class GuardedHttpProtocol(asyncio.Protocol):
    """uvicorn's httptools protocol behind connection, head-size and head-time limits.

    uvicorn constructs it with the keyword arguments it gives any ``http=`` class.
    """

    def __init__(self, **uvicorn_args: Any) -> None:
        inner_class = import_from_string(HTTP_PROTOCOLS["httptools"])
        self.inner: asyncio.Protocol = inner_class(**uvicorn_args)
        self.limits = _limits()
        self.loop: asyncio.AbstractEventLoop = uvicorn_args.get("_loop") or (
            asyncio.get_running_loop()
        )
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.in_head = True
        self.head_bytes = 0
        self.timer: asyncio.TimerHandle | None = None

    # asyncio's protocol interface, forwarded to uvicorn's protocol.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        _OPEN.add(self)
        self.inner.connection_made(transport)
        if len(_OPEN) > self.limits.max_connections:
            self._refuse(503, "too many connections to this worker; retry shortly")
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        _OPEN.discard(self)
        self._disarm()
        self.inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.parser is not None:
            if self.in_head:
                self.head_bytes += len(data)
                if self.timer is None:
                    self._arm()
            try:
                self.parser.feed_data(data)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade):
                # Malformed (uvicorn answers 400) or upgraded: no more heads to watch.
                self.parser = None
                self._disarm()
            if self.in_head and self.head_bytes > self.limits.max_header_bytes:
                self._refuse(
                    431,
                    f"request head larger than {self.limits.max_header_bytes} bytes "
                    "(FEATURESTORE_MAX_HEADER_BYTES); send fewer or shorter headers",
                )
                return
        self.inner.data_received(data)

    # httptools.HttpRequestParser callbacks: where heads begin and end.

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._disarm()

    def on_message_complete(self) -> None:
        self.in_head = True
        self.head_bytes = 0

    def _arm(self) -> None:
        self._disarm()
        self.timer = self.loop.call_later(self.limits.header_timeout_seconds, self._timed_out)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self) -> None:
        self.timer = None
        if self.in_head:
            self._refuse(
                408,
                f"request head not received within {self.limits.header_timeout_seconds:g} s "
                "(FEATURESTORE_HEADER_TIMEOUT_SECONDS)",
            )

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with a JSON error and close the connection."""
        self._disarm()
        self.parser = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        body = orjson.dumps({"error": {"type": _KINDS[status], "message": message}})
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        transport.write(head.encode("latin-1") + body)
        transport.close()
