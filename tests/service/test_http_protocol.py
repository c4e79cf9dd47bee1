"""``featurestore serve``'s HTTP protocol: lookups answered in the protocol, like the app.

A real ``featurestore serve`` process on loopback, spoken to over raw sockets so that
keep-alive, pipelining, bodies in pieces and ``Connection: close`` are exercised as a
client would produce them. Answers are compared with the in-process FastAPI app on
the same registry and Redis.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from online_store.embedded import EmbeddedRedis
from tests.service.conftest import AppClient, Repo, columns, some_ids
from tests.service.conftest import ServeProcess as Server

MAX_BODY = 64 * 1024
FEATURES = ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"]


# the small body limit makes the 413 case cheap; keys are checked on every request
SETTINGS = {"FEATURESTORE_MAX_BODY_BYTES": str(MAX_BODY), "FEATURESTORE_API_KEY_CACHE_SECONDS": "0"}


@pytest.fixture(scope="module")
def server(repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(repo, tmp_path_factory.mktemp("protocol") / "serve.log", **SETTINGS)
    yield srv
    log = srv.stop()
    assert "Traceback" not in log, log


def lookup_body(drivers: list[Any], features: list[str] = FEATURES) -> bytes:
    return orjson.dumps({"entities": {"driver_id": drivers}, "features": features})


def http_request(
    method: str,
    path: str,
    body: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    repeated: list[tuple[str, str]] = (),  # type: ignore[assignment]
    version: str = "1.1",
) -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1"]
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if method == "POST" and "Transfer-Encoding" not in all_headers:
        all_headers.setdefault("Content-Length", str(len(body)))
    lines += [f"{name}: {value}" for name, value in [*all_headers.items(), *repeated]]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return orjson.loads(self.body)


def read_responses(sock: socket.socket, n: int) -> list[Response]:
    """Read exactly ``n`` responses with Content-Length bodies off ``sock``."""
    buffer = b""
    out: list[Response] = []
    while len(out) < n:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers["content-length"])
            if len(buffer) >= end + 4 + length:
                status = int(head[0].split()[1])
                out.append(Response(status, headers, buffer[end + 4 : end + 4 + length]))
                buffer = buffer[end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(out)} of {n} responses"
        buffer += chunk
    assert buffer == b"", "bytes past the last expected response"
    return out


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def drivers_of(response: Response) -> list[Any]:
    return list(columns(response.json())["driver_id"]["values"])


def test_lookups_answer_exactly_as_the_app(server: Server, client: AppClient, repo: Repo) -> None:
    drivers = some_ids(repo, "driver_stats", "driver_id", 5)
    customers = some_ids(repo, "customer_profile", "customer_id", 5)
    ride = {
        "driver_id": drivers,
        "customer_id": customers,
        "distance_km": [4.2] * 5,
        "duration_min": [11.0] * 5,
    }
    bodies = [
        lookup_body(drivers[:1]),
        lookup_body([*drivers, 4_000_000_001]),
        orjson.dumps({"feature_service": "ride_ranking_v1", "entities": ride}),
        lookup_body(drivers, ["driver_hourly_stats:no_such_feature"]),  # 404
        b'{"entities": {"driver_id": [1001]}, "features": ',  # 422: broken JSON
        lookup_body(["not-an-int"]),  # 422: wrong entity type
        orjson.dumps({"entities": {"driver_id": drivers}, "features": FEATURES, "extra": 1}),
    ]
    with server.connect() as sock:
        for body in bodies:
            sock.sendall(http_request("POST", "/get-online-features", body))
            (got,) = read_responses(sock, 1)
            want = client.post(
                "/get-online-features", content=body, headers={"content-type": "application/json"}
            )
            assert got.status == want.status_code, (body, got.body)
            assert got.body == want.content, body
            assert got.headers["content-type"] == "application/json"
            assert got.headers["server"] == "uvicorn"
            assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", got.headers["date"])


def test_keep_alive_mixes_lookups_and_other_routes(server: Server, repo: Repo) -> None:
    drivers = some_ids(repo, "driver_stats", "driver_id", 20)
    with server.connect() as sock:
        for i, driver in enumerate(drivers):
            sock.sendall(http_request("POST", "/get-online-features", lookup_body([driver])))
            (resp,) = read_responses(sock, 1)
            assert resp.status == 200
            assert drivers_of(resp) == [driver]
            if i % 5 == 0:
                sock.sendall(http_request("GET", "/health"))
                (health,) = read_responses(sock, 1)
                assert health.status == 200
        sock.sendall(http_request("GET", "/registry/feature-views"))
        (views,) = read_responses(sock, 1)
        assert views.status == 200
        assert "driver_hourly_stats" in views.body.decode()


def test_pipelined_requests_are_answered_in_order(server: Server, repo: Repo) -> None:
    a, b, c = some_ids(repo, "driver_stats", "driver_id", 3)
    batch = b"".join(
        [
            http_request("POST", "/get-online-features", lookup_body([a])),
            http_request("POST", "/get-online-features", lookup_body([b])),
            http_request("GET", "/health"),
            http_request("POST", "/get-online-features", lookup_body([c])),
            http_request("POST", "/get-online-features", b"{not json"),
            http_request("GET", "/ready"),
            http_request("POST", "/get-online-features", lookup_body([a, b])),
        ]
    )
    with server.connect() as sock:
        sock.sendall(batch)
        responses = read_responses(sock, 7)
    assert [r.status for r in responses] == [200, 200, 200, 200, 422, 200, 200]
    assert drivers_of(responses[0]) == [a]
    assert drivers_of(responses[1]) == [b]
    assert responses[2].json() == {"status": "ok"}
    assert drivers_of(responses[3]) == [c]
    assert responses[4].json()["error"]["type"] == "validation_error"
    assert drivers_of(responses[6]) == [a, b]


def test_body_arriving_in_pieces(server: Server, repo: Repo) -> None:
    drivers = some_ids(repo, "driver_stats", "driver_id", 3)
    request = http_request("POST", "/get-online-features", lookup_body(drivers))
    head_end = request.index(b"\r\n\r\n") + 4
    with server.connect() as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pieces = [request[: head_end - 3], request[head_end - 3 : head_end + 10]]
        pieces += [request[head_end + 10 : -4], request[-4:]]
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.05)
        (resp,) = read_responses(sock, 1)
    assert resp.status == 200
    assert drivers_of(resp) == drivers


@pytest.mark.parametrize(
    ("version", "headers"),
    [("1.1", {"Connection": "close"}), ("1.0", {})],
    ids=["connection-close", "http-1.0"],
)
def test_connection_close_is_honoured(
    server: Server, repo: Repo, version: str, headers: dict[str, str]
) -> None:
    drivers = some_ids(repo, "driver_stats", "driver_id", 1)
    request = http_request(
        "POST", "/get-online-features", lookup_body(drivers), headers=headers, version=version
    )
    with server.connect() as sock:
        sock.sendall(request)
        (resp,) = read_responses(sock, 1)
        assert resp.status == 200
        assert drivers_of(resp) == drivers
        assert resp.headers.get("connection") == "close"
        assert closed_by_server(sock)


def test_chunked_and_oversized_bodies_go_through_the_app(server: Server, repo: Repo) -> None:
    drivers = some_ids(repo, "driver_stats", "driver_id", 4)
    body = lookup_body(drivers)
    chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:])
    with server.connect() as sock:
        sock.sendall(http_request("POST", "/get-online-features", lookup_body(drivers)))
        sock.sendall(
            http_request(
                "POST", "/get-online-features", chunked, headers={"Transfer-Encoding": "chunked"}
            )
        )
        plain, via_app = read_responses(sock, 2)
    assert plain.status == via_app.status == 200
    assert plain.body == via_app.body

    padding = b" " * (MAX_BODY + 1 - len(body))
    with server.connect() as sock:
        sock.sendall(http_request("POST", "/get-online-features", body + padding))
        (too_large,) = read_responses(sock, 1)
    assert too_large.status == 413
    error = too_large.json()["error"]
    assert error["type"] == "request_too_large"
    assert str(MAX_BODY) in error["message"]


def test_lookups_are_counted_in_metrics(server: Server, repo: Repo) -> None:
    pattern = re.compile(
        r'^featurestore_http_requests_total\{method="POST",route="/get-online-features",'
        r'status="200"\} ([\d.e+]+)$',
        re.M,
    )

    def count() -> float:
        match = pattern.search(httpx.get(f"{server.url}/metrics").text)
        return float(match.group(1)) if match else 0.0

    before = count()
    drivers = some_ids(repo, "driver_stats", "driver_id", 1)
    with server.connect() as sock:
        for _ in range(7):
            sock.sendall(http_request("POST", "/get-online-features", lookup_body(drivers)))
            read_responses(sock, 1)
    assert count() == before + 7


def test_a_client_leaving_mid_lookup_does_not_disturb_others(server: Server, repo: Repo) -> None:
    drivers = some_ids(repo, "driver_stats", "driver_id", 50)
    for _ in range(20):
        with server.connect() as sock:
            sock.sendall(http_request("POST", "/get-online-features", lookup_body(drivers)))
    with server.connect() as sock:
        sock.sendall(http_request("POST", "/get-online-features", lookup_body(drivers[:2])))
        (resp,) = read_responses(sock, 1)
    assert resp.status == 200
    assert drivers_of(resp) == drivers[:2]


def test_api_keys_are_checked_on_lookups(
    repo: Repo, read_key: str, tmp_path: Path, client: AppClient
) -> None:
    srv = Server(repo, tmp_path / "serve-auth.log", "--auth", **SETTINGS)
    try:
        drivers = some_ids(repo, "driver_stats", "driver_id", 2)
        body = lookup_body(drivers)

        def one(**kwargs: Any) -> Response:
            with srv.connect() as sock:
                sock.sendall(http_request("POST", "/get-online-features", body, **kwargs))
                return read_responses(sock, 1)[0]

        missing = one()
        wrong = one(headers={"Authorization": "Bearer fsk_x_y"})
        right = one(headers={"Authorization": f"Bearer {read_key}"})
        # two headers: the first one counts, as in the app
        first_valid = one(
            repeated=[("Authorization", f"Bearer {read_key}"), ("Authorization", "Bearer fsk_x_y")]
        )
        first_wrong = one(
            repeated=[("Authorization", "Bearer fsk_x_y"), ("Authorization", f"Bearer {read_key}")]
        )
        assert first_valid.status == 200
        assert first_wrong.status == 401
        assert missing.status == wrong.status == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert missing.json()["error"]["type"] == "unauthenticated"
        assert right.status == 200
        want = client.post(
            "/get-online-features", content=body, headers={"content-type": "application/json"}
        )
        assert right.body == want.content
    finally:
        log = srv.stop()
    assert read_key not in log


def test_shutdown_finishes_a_lookup_in_flight(
    repo: Repo, service_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    redis_pid = service_redis.pid
    assert redis_pid is not None
    srv = Server(repo, tmp_path / "serve.log", **SETTINGS, FEATURESTORE_REDIS_TIMEOUT_SECONDS="20")
    drivers = some_ids(repo, "driver_stats", "driver_id", 3)
    try:
        with srv.connect() as sock:
            sock.sendall(http_request("POST", "/get-online-features", lookup_body(drivers)))
            (warm,) = read_responses(sock, 1)
            os.kill(redis_pid, signal.SIGSTOP)  # the lookup below waits on Redis
            try:
                sock.sendall(http_request("POST", "/get-online-features", lookup_body(drivers)))
                time.sleep(0.5)
                srv.proc.send_signal(signal.SIGTERM)
                time.sleep(1.0)
                assert srv.proc.poll() is None, "the server quit with a lookup in flight"
            finally:
                os.kill(redis_pid, signal.SIGCONT)
            (late,) = read_responses(sock, 1)
            assert late.status == 200
            assert late.body == warm.body
            assert late.headers.get("connection") == "close"  # shutting down: no keep-alive
            assert closed_by_server(sock)
        assert srv.proc.wait(timeout=30) == 0
    finally:
        log = srv.stop()
    assert "Traceback" not in log


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_client_not_reading_does_not_grow_the_server(server: Server) -> None:
    """Lookups keep coming but their responses are not read: the server stops reading
    the connection once its write buffer is full instead of buffering every answer, and
    every answer still arrives, in order, once the client reads."""
    body = lookup_body(list(range(1, 301)))  # ~36 KB per response, 2 KB per request
    request = http_request("POST", "/get-online-features", body)
    before = _rss_kib(server.proc.pid)
    sent, offset = 0, 0
    with server.connect() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(0.5)
        deadline = time.monotonic() + 15
        try:
            while sent < 800 and time.monotonic() < deadline:
                offset = 0
                while offset < len(request):
                    offset += sock.send(request[offset:])
                sent += 1
                time.sleep(0.002)  # one at a time, as a slow client's requests arrive
        except TimeoutError:
            pass  # kernel buffers full of requests the server no longer reads
        grown = _rss_kib(server.proc.pid) - before
        # Buffering every answer would take ~29 MB; the socket buffers hold the requests.
        assert grown < 12 * 1024, f"server RSS grew {grown} KiB for {sent} unread responses"

        rest = request[offset:]  # the request the timeout cut short, if any
        sock.settimeout(60)
        finisher = threading.Thread(target=sock.sendall, args=(rest,))
        finisher.start()
        responses = read_responses(sock, sent + (1 if rest else 0))
        finisher.join()
    assert {r.status for r in responses} == {200}


def test_a_connection_closed_behind_a_lookup_leaves_no_error(server: Server, repo: Repo) -> None:
    drivers = some_ids(repo, "driver_stats", "driver_id", 2)
    with server.connect() as sock:
        sock.sendall(
            http_request("POST", "/get-online-features", lookup_body(drivers))
            + http_request("GET", "/ready")
            + b"GARBAGE\r\n\r\n"  # uvicorn answers 400 and closes the connection
        )
        sock.settimeout(5)
        while sock.recv(65536):
            pass
    with server.connect() as sock:  # the server still answers
        sock.sendall(http_request("POST", "/get-online-features", lookup_body(drivers)))
        (resp,) = read_responses(sock, 1)
    assert resp.status == 200
    time.sleep(0.5)
    log = server.log.read_text()
    assert "Traceback" not in log
    assert "exception was never retrieved" not in log
