"""Bulk writes to Redis without a redis-py pipeline: whole-chunk RESP buffers on one held
connection.

redis-py spends ~10 µs of Python per pipelined command (queueing, packing, one
``parse_response`` per reply); for a materialization that is most of the wall time. Here a
chunk's commands arrive as one RESP buffer (built by ``online_store.writer``), go out in one
write, and the replies are read with the connection's own ``read_response`` (redis-py's
hiredis parser). The connection comes from (and returns to) the client's own pool, so AUTH,
SELECT, TLS and unix sockets are redis-py's.

The raw path is only for ``redis.Redis`` (not cluster): :class:`WriteSink` sends a cluster
client's commands through ordinary pipelines, which route every command to its slot's node.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import redis

T = TypeVar("T")


def supports_raw(client: object) -> bool:
    """Whether ``client`` is a single-server redis-py client we can drive directly."""
    return isinstance(client, redis.Redis) and not getattr(
        client, "single_connection_client", False
    )


class HeldConnection:
    """One connection of a client's pool, held for a whole bulk write: commands go out as
    soon as they are packed and their replies are read later, in order.

    Redis runs one connection's commands in the order they arrive, so a read sent behind
    writes sees them without waiting for their replies first: the server goes straight
    from the writes to the read instead of idling while the client parses the writes'
    replies. Use it from one thread at a time.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._conn: Any = None
        self._owed = 0

    def send(self, packed: bytes, replies: int) -> None:
        """Send pre-packed commands that will answer ``replies`` replies; do not wait."""
        if self._conn is None:
            self._conn = self._pool.get_connection()
        try:
            self._conn.send_packed_command([packed], check_health=False)
        except BaseException:
            self._discard()
            raise
        self._owed += replies

    def call(self, packed: bytes, replies: int) -> list[object]:
        """Send ``packed`` behind what is in flight, read every reply owed, and return the
        ``replies`` replies of ``packed``.

        Raises:
            redis.ResponseError: the server answered an earlier or this command with an
                error (the first one is raised once every reply is read).
            redis.ConnectionError: the connection broke (it is discarded, not reused).
        """
        self.send(packed, replies)
        out = self.settle()
        return out[len(out) - replies :]

    def settle(self) -> list[object]:
        """Read every reply owed (the first error reply is raised after all are read)."""
        out: list[object] = []
        error: redis.ResponseError | None = None
        try:
            for _ in range(self._owed):
                try:
                    out.append(self._conn.read_response(disable_decoding=True))
                except redis.ResponseError as exc:  # an error reply; the stream stays in step
                    error = error or exc
                    out.append(exc)
        except BaseException:
            self._discard()
            raise
        self._owed = 0
        if error is not None:
            raise error
        return out

    def close(self) -> None:
        """Read what is owed, then give the connection back to the pool."""
        try:
            self.settle()
        finally:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                self._pool.release(conn)

    def _discard(self) -> None:
        # The reply stream may be half-read: never hand this connection out again.
        conn, self._conn, self._owed = self._conn, None, 0
        if conn is not None:
            conn.disconnect()
            self._pool.release(conn)


class WriteSink:
    """Where the ``HSET`` commands of a bulk write's chunks go (``online_store.writer``).

    On a single server one connection is held for the whole write and driven by a
    background thread: chunk N's commands are sent while the caller encodes chunk N+1, and
    chunk N+1's stored times are read (:meth:`after_in_flight`) by a command sent right
    behind chunk N's on that connection. Redis runs them in order, so the read sees chunk
    N's writes, and it starts on it as soon as the writes are done instead of waiting for
    the client to read their replies first. On a cluster the commands run synchronously
    through a redis-py cluster pipeline.
    """

    def __init__(self, client: redis.Redis | redis.RedisCluster) -> None:
        self.client = client
        self.raw = supports_raw(client)
        self._executor = ThreadPoolExecutor(1, "redis-writer") if self.raw else None
        self._held = HeldConnection(client) if self.raw else None  # type: ignore[arg-type]
        self._pending: Future[None] | None = None

    def submit(self, packed: bytes, replies: int) -> None:
        """Send ``packed`` (``replies`` replies) from the background thread; do not wait."""
        self.wait()
        assert self._executor is not None
        assert self._held is not None
        self._pending = self._executor.submit(self._held.send, packed, replies)

    def call(self, packed: bytes, replies: int) -> list[object]:
        """Send ``packed`` behind the writes in flight and return its replies (on the
        background thread, from within :meth:`after_in_flight`)."""
        assert self._held is not None
        return self._held.call(packed, replies)

    def after_in_flight(self, read: Callable[[], T]) -> T:
        """``read()`` run after the write in flight is sent (if any); its result."""
        if self._executor is None:
            return read()
        return self._executor.submit(read).result()

    def run(self, commands: list[tuple[bytes | str | int, ...]]) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            pipe.execute()

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        """Wait for every reply (raising a write's error) and give the connection back."""
        try:
            self.wait()
        finally:
            if self._executor is not None:
                assert self._held is not None
                try:
                    self._executor.submit(self._held.close).result()
                finally:
                    self._executor.shutdown(wait=True)
