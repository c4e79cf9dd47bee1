"""FastRedis: URLs as redis-py reads them; a silent server fails requests after the timeout."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis
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
        client = FastRedis(f"redis://127.0.0.1:{port}/0", timeout=0.3)
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
        client = FastRedis(redis_url, timeout=2)
        try:
            assert all(await asyncio.gather(*(client.ping() for _ in range(n))))
        finally:
            await client.aclose()

    asyncio.run(scenario())


def _socket_server(sock: Path, *options: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--save",
            "",
            "--appendonly",
            "no",
            *options,
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return proc


def test_a_unix_socket_url_reads_that_server_and_database(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    proc = _socket_server(sock)
    try:
        redis.Redis(unix_socket_path=str(sock), db=2).hset(b"k", mapping={b"f": b"v"})

        async def scenario() -> list[object]:
            client = FastRedis(f"unix://{sock}?db=2", timeout=2)
            try:
                return await client.pipeline().hmget_many([b"k", b"nope"], [b"f"]).execute()
            finally:
                await client.aclose()

        assert asyncio.run(scenario()) == [[b"v"], [None]]
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("user", ["", "reader"])
def test_credentials_in_the_url_authenticate(tmp_path: Path, user: str) -> None:
    """A password (or an ACL user and password) from the URL; a wrong one is refused."""
    sock = tmp_path / "redis.sock"
    proc = _socket_server(
        sock, "--requirepass", "s3cret", "--user", "reader", "on", ">r3ad", "~*", "+@all"
    )
    try:
        admin = redis.Redis(unix_socket_path=str(sock), password="s3cret", db=1)
        admin.hset(b"k", mapping={b"f": b"v"})
        password = "r3ad" if user else "s3cret"

        async def read(url: str) -> list[object]:
            client = FastRedis(url, timeout=2)
            try:
                return await client.pipeline().hmget_many([b"k"], [b"f"]).execute()
            finally:
                await client.aclose()

        creds = f"{user}:{password}" if user else f":{password}"
        assert asyncio.run(read(f"unix://{creds}@{sock}?db=1")) == [[b"v"]]
        with pytest.raises(redis.exceptions.RedisError):
            asyncio.run(read(f"unix://{user}:wrong@{sock}?db=1"))
    finally:
        proc.terminate()
        proc.wait(10)
