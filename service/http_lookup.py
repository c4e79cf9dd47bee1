"""The HTTP protocol of ``featurestore serve``: uvicorn's, with lookups answered in it.

At one entity a lookup's own work (parse, plan lookup, one pipelined Redis read,
encode) is about 30 us, and uvicorn's per-request ASGI machinery costs about as
much again: a scope dict with a copy of the app state, an ``asyncio.Event``, a
request-response cycle object, the ASGI ``receive``/``send`` messages, header
validation by regular expression, and two socket writes (head, then body).

:class:`LookupProtocol` is uvicorn's httptools protocol for every request but one
kind: a ``POST /get-online-features`` with a ``Content-Length`` within the body
limit, arriving on a connection with no response outstanding. That request is read
by the parser callbacks and answered by the same
:func:`service.fastpath.respond` the ASGI path uses (same API key check, handler,
error mapping and metrics), with the whole response in one write. Everything else
(other routes, chunked or oversized bodies, ``Expect: 100-continue``, HTTP
pipelining behind an outstanding response, a client not reading its responses (the
transport's write buffer is full: uvicorn's cycle waits for it to drain, and reading
pauses), FastAPI's native telemetry switched on)
goes to the ASGI app exactly as with plain uvicorn.

Keep-alive, ``Connection: close``, graceful shutdown (an in-flight lookup finishes
before its connection closes) and pipelined requests queued behind a lookup behave
as in uvicorn: a lookup in flight occupies the connection's ``cycle`` slot the way a
uvicorn request-response cycle does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.fastpath import PATH, ConnectionLimits, ServerFastPath, respond

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from service.deps import ServiceState

_PATH = PATH.encode()
log = logging.getLogger(__name__)


class _NoEvent:
    """Stands in for a cycle's ``message_event``: a lookup never waits for more body."""

    def set(self) -> None:
        return None


_NO_EVENT = _NoEvent()


class _Lookup:
    """One lookup on a connection, from its headers to its response.

    It has the attributes uvicorn's protocol reads from its current cycle
    (``response_complete``, ``disconnected``, ``keep_alive``, ``message_event``).
    """

    __slots__ = (
        "authorization",
        "body",
        "disconnected",
        "keep_alive",
        "response_complete",
        "started",
        "state",
    )

    message_event = _NO_EVENT

    def __init__(
        self, state: ServiceState, authorization: str | None, keep_alive: bool, started: float
    ) -> None:
        self.state = state
        self.authorization = authorization
        self.keep_alive = keep_alive
        self.started = started
        self.body: list[bytes] = []
        self.disconnected = False
        self.response_complete = False


def _front_of(app: Any) -> ServerFastPath | None:
    """The :class:`ServerFastPath` inside uvicorn's middleware wrappers, if any."""
    for _ in range(8):
        if isinstance(app, ServerFastPath):
            return app
        app = getattr(app, "app", None)
    return None


class LookupProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering idle-connection lookups itself."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        front = _front_of(self.app)
        self._limits = front.limits if front is not None else ConnectionLimits()
        self._front = front if self.limit_concurrency is None else None
        self._reading: _Lookup | None = None  # the lookup whose body the parser is reading
        self._head_cache: tuple[object, bytes] = (None, b"")
        self._in_head = True  # bytes arriving now belong to a request head
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    # Limits on connections and request heads: a peer that never finishes its headers,
    # sends megabytes of them, or opens connection after connection is cut off before
    # it costs memory or file descriptors. Checked here, before the parser keeps
    # anything, since uvicorn's httptools protocol has no such limits of its own.

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._limits.max_connections:
            self._refuse(503, "too many connections to this worker; retry shortly")
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_timer is None:
                self._arm_head_timer()
        super().data_received(data)
        if self._in_head and self._head_bytes > self._limits.max_header_bytes:
            self._refuse(
                431,
                f"request head larger than {self._limits.max_header_bytes} bytes "
                "(FEATURESTORE_MAX_HEADER_BYTES); send fewer or shorter headers",
            )

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._complete_message()

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(
            self._limits.header_timeout_seconds, self._head_timed_out
        )

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        busy = self.cycle is not None and not self.cycle.response_complete
        if self._in_head and not busy and not self.transport.is_closing():
            self._refuse(
                408,
                f"request head not received within {self._limits.header_timeout_seconds:g} s "
                "(FEATURESTORE_HEADER_TIMEOUT_SECONDS)",
            )

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with a JSON error and close, whatever the parser holds."""
        self._disarm_head_timer()
        kind = {408: "request_timeout", 431: "headers_too_large"}.get(status, "overloaded")
        body = orjson.dumps({"error": {"type": kind, "message": message}})
        head = b"%s%scontent-type: application/json\r\ncontent-length: %d\r\n" % (
            STATUS_LINE[status],
            self._default_head(),
            len(body),
        )
        self.transport.write(head + b"connection: close\r\n\r\n" + body)
        self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        lookup = self._take(self.parser.get_method())
        self._reading = lookup
        if lookup is None:
            super().on_headers_complete()
        else:
            self.cycle = lookup  # type: ignore[assignment]

    def _take(self, method: bytes) -> _Lookup | None:
        """A :class:`_Lookup` when this request can be answered here, else None."""
        front = self._front
        if (
            front is None
            or self.url != _PATH
            or method != b"POST"
            or self.expect_100_continue
            or (self.cycle is not None and not self.cycle.response_complete)
            or self.parser.should_upgrade()
            or self.flow.write_paused  # a client not reading: uvicorn's cycle waits on it
        ):
            return None
        state = front.direct_state()
        if state is None:
            return None
        length = -1
        authorization = None
        for name, value in self.headers:
            if name == b"content-length":
                length = int(value) if value.isdigit() else -1
            elif name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")  # the first one, as in the app
            elif name == b"transfer-encoding":
                return None
        if length < 0 or length > front.max_body_bytes:
            return None  # chunked or too large: the ASGI path reads it (and answers 413)
        if state.auth is not None and state.auth.peek(authorization) is None:
            # No key, or one the in-memory snapshot cannot vouch for: the ASGI path
            # checks it before reading the body, which the parser would buffer here.
            return None
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        return _Lookup(state, authorization, keep_alive, time.perf_counter())

    def on_body(self, body: bytes) -> None:
        lookup = self._reading
        if lookup is None:
            super().on_body(body)
        else:
            lookup.body.append(body)

    def _complete_message(self) -> None:
        lookup = self._reading
        if lookup is None:
            super().on_message_complete()
            return
        self._reading = None
        task = self.loop.create_task(self._answer(lookup))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def _answer(self, lookup: _Lookup) -> None:
        status = 500
        try:
            parts = lookup.body
            body = parts[0] if len(parts) == 1 else b"".join(parts)
            status, headers, payload = await respond(lookup.state, lookup.authorization, body)
            # A request pipelined behind this one holds `cycle`, so a lost connection
            # marks that one, not this: ask the transport too.
            if not (lookup.disconnected or self.transport.is_closing()):
                head = [STATUS_LINE[status], self._default_head()]
                for name, value in headers:
                    head += (name, b": ", value, b"\r\n")
                if not lookup.keep_alive:
                    head.append(b"connection: close\r\n")
                head += (b"\r\n", payload)
                self.transport.write(b"".join(head))
                if not lookup.keep_alive:
                    self.transport.close()
        except Exception:  # respond() maps every error; this is the protocol's own
            log.exception("POST %s: the response could not be written", PATH)
            self.transport.close()
        finally:
            lookup.response_complete = True
            # Starts a request pipelined behind this one, or arms the keep-alive timer
            # (nothing when the connection is closing).
            self.on_response_complete()
            lookup.state.metrics.observe_request(
                PATH, "POST", status, time.perf_counter() - lookup.started
            )

    def _default_head(self) -> bytes:
        """The server's default headers (``date``, ``server``) as bytes, cached per tick."""
        defaults = self.server_state.default_headers
        cached_for, head = self._head_cache
        if cached_for is not defaults:  # uvicorn rebuilds the list when the date changes
            head = b"".join(b"%s: %s\r\n" % (name, value) for name, value in defaults)
            self._head_cache = (defaults, head)
        return head
