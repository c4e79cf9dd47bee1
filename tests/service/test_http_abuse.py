"""A real ``featurestore serve`` under hostile connections: nothing keyless costs memory.

Each test measures the server's resident memory (its ``/proc`` status) and the latency
of lookups made with a valid key while the abuse goes on.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.service.conftest import Repo, ServeProcess, some_ids

MB = 1024 * 1024
LIMITS = {
    "FEATURESTORE_MAX_HEADER_BYTES": str(16 * 1024),
    "FEATURESTORE_HEADER_TIMEOUT_SECONDS": "1",
    "FEATURESTORE_MAX_CONNECTIONS": "100",
}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def server(repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    srv = ServeProcess(repo, tmp_path_factory.mktemp("abuse") / "serve.log", "--auth", **LIMITS)
    yield srv
    log = srv.stop()
    assert "Traceback" not in log, log


class Prober:
    """Valid lookups in a loop on a thread: every status and latency is kept."""

    def __init__(self, srv: ServeProcess, key: str, repo: Repo) -> None:
        self.body = {
            "features": ["driver_hourly_stats:conv_rate"],
            "entities": {"driver_id": some_ids(repo, "driver_stats", "driver_id", 1)},
        }
        self.client = httpx.Client(
            base_url=srv.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        self.results: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            status = self.client.post("/get-online-features", json=self.body).status_code
            self.results.append((status, time.perf_counter() - started))
            time.sleep(0.01)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()

    def assert_served(self, *, max_seconds: float) -> None:
        assert self.results, "no lookup completed during the abuse"
        assert {status for status, _ in self.results} == {200}
        slowest = max(seconds for _, seconds in self.results)
        assert slowest < max_seconds, f"a lookup took {slowest:.2f} s"


def read_status(sock: socket.socket) -> tuple[int, bytes]:
    """The status of the one response on ``sock`` and everything read up to the close."""
    sock.settimeout(10)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data.split()[1]), data


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """The status and body of the next response on ``sock`` (Content-Length framed)."""
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), body


def test_keyless_bodies_are_refused_before_they_are_read(
    server: ServeProcess, read_key: str, repo: Repo
) -> None:
    before = rss_mb(server.proc.pid)
    socks: list[socket.socket] = []
    with Prober(server, read_key, repo) as prober:
        # Declared bodies of 15 MB: the 401 comes back while the body is still unsent.
        for i in range(60):
            path = "/get-online-features" if i % 2 else "/push"
            sock = server.connect()
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {15 * MB}\r\n\r\n".encode()
                + b"{" * (64 * 1024)
            )
            socks.append(sock)
        answers = [read_response(sock) for sock in socks]
        # The rest of each body is read and dropped as it comes, never kept.
        for sock in socks:
            sock.sendall(b"{" * (4 * MB))
        time.sleep(1)
        grown = rss_mb(server.proc.pid) - before
    for sock in socks:
        sock.close()
    assert {status for status, _ in answers} == {401}
    assert all(b'"unauthenticated"' in body for _, body in answers)
    assert grown < 60, f"server grew {grown:.0f} MB for keyless bodies"
    prober.assert_served(max_seconds=1.0)


def test_a_malformed_keyless_body_gets_401_not_a_parse_error(server: ServeProcess) -> None:
    for path in ("/push", "/get-online-features", "/materialize", "/training-dataset"):
        resp = httpx.post(server.url + path, content=b"{not json", timeout=10)
        assert resp.status_code == 401, (path, resp.text)
        assert resp.json()["error"]["type"] == "unauthenticated"


def test_an_oversized_head_is_answered_431_and_costs_no_memory(
    server: ServeProcess, read_key: str, repo: Repo
) -> None:
    before = rss_mb(server.proc.pid)
    with Prober(server, read_key, repo) as prober:
        sock = server.connect()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        sock.settimeout(2)
        try:
            while sent < 50 * MB:
                sock.sendall(b"a" * (256 * 1024))
                sent += 256 * 1024
        except OSError:
            pass
        status, data = read_status(sock)
        sock.close()
    assert status == 431
    assert b'"headers_too_large"' in data
    assert sent < 20 * MB, "the server kept reading a header it had refused"
    assert rss_mb(server.proc.pid) - before < 30
    prober.assert_served(max_seconds=1.0)


def test_a_head_that_never_finishes_is_closed_with_408(server: ServeProcess) -> None:
    silent = server.connect()
    slow = server.connect()
    slow.sendall(b"POST /get-online-features HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    status, data = read_status(slow)
    assert status == 408
    assert b"FEATURESTORE_HEADER_TIMEOUT_SECONDS" in data
    assert time.monotonic() - started < 5
    status, _ = read_status(silent)
    assert status == 408
    for sock in (silent, slow):
        sock.close()


def test_a_connection_flood_is_refused_and_lookups_go_on(
    server: ServeProcess, read_key: str, repo: Repo
) -> None:
    flood = [server.connect() for _ in range(150)]
    refused = 0
    for sock in flood[100:]:
        status, data = read_status(sock)
        refused += status == 503
        assert b'"overloaded"' in data
    assert refused == 50
    for sock in flood:
        sock.close()
    time.sleep(0.5)  # the server sees the closes
    resp = httpx.post(
        server.url + "/get-online-features",
        headers={"Authorization": f"Bearer {read_key}"},
        content=orjson.dumps(
            {
                "features": ["driver_hourly_stats:conv_rate"],
                "entities": {"driver_id": some_ids(repo, "driver_stats", "driver_id", 1)},
            }
        ),
        timeout=10,
    )
    assert resp.status_code == 200


def test_made_up_keys_do_not_slow_lookups(server: ServeProcess, read_key: str, repo: Repo) -> None:
    def flood() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i in range(150):
                resp = client.post(
                    "/get-online-features",
                    headers={"Authorization": f"Bearer fsk_{i:012x}_made-up"},
                    json={"features": [], "entities": {}},
                )
                assert resp.status_code == 401

    with Prober(server, read_key, repo) as prober:
        threads = [threading.Thread(target=flood) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    prober.assert_served(max_seconds=0.5)
