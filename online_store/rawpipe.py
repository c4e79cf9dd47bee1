"""A leaner pipeline for bulk writes to a single Redis server.

redis-py spends ~10 µs of Python per pipelined command (queueing, packing, one
``parse_response`` per reply); for a materialization that is most of the wall time.
Here commands are packed by hiredis in C and sent in one write, and the replies are read
with the connection's own ``read_response`` (redis-py's hiredis parser) without building
a pipeline. The connection comes from (and returns to) the client's own pool, so AUTH,
SELECT, TLS and unix sockets are redis-py's.

Only for ``redis.Redis`` (not cluster): cluster clients use ordinary pipelines, which
route every command to its slot's node.
"""

from __future__ import annotations

from collections.abc import Sequence

import hiredis
import redis


def pack(args: Sequence[bytes | str | int]) -> bytes:
    """RESP encoding of one command (hiredis, in C)."""
    return bytes(hiredis.pack_command(tuple(args)))  # type: ignore[arg-type]


def supports_raw(client: object) -> bool:
    """Whether ``client`` is a single-server redis-py client we can drive directly."""
    return isinstance(client, redis.Redis) and not getattr(
        client, "single_connection_client", False
    )


def execute_packed(
    client: redis.Redis, packed: list[bytes], *, replies: int | None = None
) -> list[object]:
    """Send pre-packed commands in one round trip and return every reply in order.

    Args:
        client: a ``redis.Redis`` client.
        packed: commands from :func:`pack` (an item may hold several commands).
        replies: number of replies to wait for (default: one per item).

    Returns:
        One reply per command (bytes, int, list, None).

    Raises:
        redis.ResponseError: the server answered a command with an error.
        redis.ConnectionError: the connection broke (it is discarded, not reused).
    """
    if not packed:
        return []
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(packed)], check_health=False)
        want = len(packed) if replies is None else replies
        out: list[object] = []
        error: redis.ResponseError | None = None
        for _ in range(want):
            try:
                out.append(conn.read_response(disable_decoding=True))
            except redis.ResponseError as exc:  # an error reply; the stream stays in step
                error = error or exc
                out.append(exc)
        if error is not None:
            raise error
        return out
    except BaseException:
        # The reply stream may be half-read: never hand this connection out again.
        conn.disconnect()
        raise
    finally:
        pool.release(conn)
