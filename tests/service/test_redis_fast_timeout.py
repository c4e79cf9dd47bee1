"""FastRedis: a server that stops answering fails requests after the timeout, never hangs."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.redis_fast import FastRedis


async def _stuck_after_first_reply() -> tuple[asyncio.Server, int]:
    """A TCP server answering the first PING with PONG, then reading and never replying."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"PING\r\n")
        writer.write(b"+PONG\r\n")
        await writer.drain()
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_connected_requests_time_out_when_the_server_goes_silent() -> None:
    async def scenario() -> None:
        server, port = await _stuck_after_first_reply()
        client = FastRedis(f"redis://127.0.0.1:{port}/0", max_connections=1, timeout=0.3)
        try:
            assert await client.ping()  # connected; later calls take the hot path
            started = time.monotonic()
            results = await asyncio.gather(
                client.ping(), client.ping(), client.ping(), return_exceptions=True
            )
            waited = time.monotonic() - started
            assert 0.25 <= waited < 2.0
            assert isinstance(results[0], RedisTimeoutError)
            assert "did not answer within 0.3 s" in str(results[0])
            # The connection was dropped: requests queued behind it fail too, none hang.
            for result in results[1:]:
                assert isinstance(result, RedisTimeoutError | RedisConnectionError)
        finally:
            await client.aclose()
            server.close()

    asyncio.run(asyncio.wait_for(scenario(), 10))


@pytest.mark.parametrize("n", [1, 50])
def test_concurrent_requests_on_the_shared_connection_all_answer(redis_url: str, n: int) -> None:
    async def scenario() -> None:
        client = FastRedis(redis_url, max_connections=1, timeout=2)
        try:
            assert all(await asyncio.gather(*(client.ping() for _ in range(n))))
        finally:
            await client.aclose()

    asyncio.run(scenario())
