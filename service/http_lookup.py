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

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.fastpath import PATH, ServerFastPath, respond

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
        self._front = _front_of(self.app) if self.limit_concurrency is None else None
        self._reading: _Lookup | None = None  # the lookup whose body the parser is reading
        self._head_cache: tuple[object, bytes] = (None, b"")

    def on_headers_complete(self) -> None:
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
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        return _Lookup(state, authorization, keep_alive, time.perf_counter())

    def on_body(self, body: bytes) -> None:
        lookup = self._reading
        if lookup is None:
            super().on_body(body)
        else:
            lookup.body.append(body)

    def on_message_complete(self) -> None:
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
