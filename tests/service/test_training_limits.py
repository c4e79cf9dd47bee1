"""/training-dataset limits on a real `featurestore serve` process, while lookups go on.

The server runs with small ``training_*`` limits. Each test sends one request that would
take the server down without them (a query that never ends, one that needs gigabytes, a
ZSTD bomb) and checks both sides: the request gets its 4xx JSON answer, and online
lookups sent at the same time keep answering 200 quickly. Memory is measured on the
server process itself (/proc/<pid>/status).
"""

from __future__ import annotations

import contextlib
import io
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from foundation.errors import FeatureStoreError
from offline_store.ipc import ARROW_STREAM
from offline_store.listing import source_files
from offline_store.sdk import get_training_dataset
from tests.service.conftest import Repo, ServeProcess

TIMEOUT_SECONDS = 6
LIMITS = {
    "FEATURESTORE_AUTH": "true",
    "FEATURESTORE_API_KEY_CACHE_SECONDS": "600",
    "FEATURESTORE_TRAINING_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
    "FEATURESTORE_TRAINING_MEMORY_LIMIT": "100MB",
    "FEATURESTORE_TRAINING_MAX_TEMP_SIZE": "300MB",
    "FEATURESTORE_TRAINING_THREADS": "1",
    "FEATURESTORE_TRAINING_MAX_CONCURRENT": "1",
    "FEATURESTORE_MAX_TRAINING_ENTITY_ROWS": "500000",
    "FEATURESTORE_MAX_TRAINING_UPLOAD_BYTES": str(64 * 1024 * 1024),
}
LOOKUP = {"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}}
DRIVER_FEATURES = [
    f"driver_hourly_stats:{f}"
    for f in ("conv_rate", "acc_rate", "avg_daily_trips", "avg_rating", "surge_multiplier")
]


@pytest.fixture(scope="module")
def server(repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    log = tmp_path_factory.mktemp("limits") / "serve.log"
    proc = ServeProcess(repo, log, **LIMITS)
    yield proc
    proc.stop()


@pytest.fixture
def http(server: ServeProcess, read_key: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {read_key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
        yield client


def proc_status(pid: int, field: str) -> int:
    """A memory figure of a process from /proc, in bytes (VmRSS now, VmHWM peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/{pid}/status")


class Lookups:
    """Online lookups in a loop on their own connection, each status and latency recorded."""

    def __init__(self, server: ServeProcess, key: str) -> None:
        self._client = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        self._stop = threading.Event()
        self.results: list[tuple[int, float]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            status = self._client.post("/get-online-features", json=LOOKUP).status_code
            self.results.append((status, time.perf_counter() - start))
            self._stop.wait(0.001)

    def __enter__(self) -> Lookups:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self._client.close()

    def check(self) -> dict[str, float]:
        """Every lookup answered 200 within a second; returns count, median and max latency."""
        assert len(self.results) >= 10, self.results
        assert {s for s, _ in self.results} == {200}
        latencies = [t for _, t in self.results]
        assert max(latencies) < 1.0, sorted(latencies)[-5:]
        return {
            "lookups": len(latencies),
            "median_ms": statistics.median(latencies) * 1000,
            "max_ms": max(latencies) * 1000,
        }


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = call()
    return response, time.perf_counter() - start


def post_sql(http: httpx.Client, sql: str, features: list[str] | None = None) -> httpx.Response:
    return http.post(
        "/training-dataset",
        json={"entity_sql": sql, "features": features or ["driver_hourly_stats:conv_rate"]},
    )


def test_a_query_past_the_time_limit_is_cancelled_with_408_while_lookups_answer(
    server: ServeProcess, http: httpx.Client, read_key: str
) -> None:
    """Also: while it runs, it holds the worker's only training slot: others get 503."""
    # Four self-joins of the driver table: 10^12 rows, hours of work without the limit.
    sql = (
        "SELECT a.driver_id, max(b.event_timestamp) AS event_timestamp FROM "
        "driver_hourly_stats a, driver_hourly_stats b, driver_hourly_stats c, "
        "driver_hourly_stats d GROUP BY a.driver_id"
    )
    small = "SELECT 1001 AS driver_id, now() AS event_timestamp"
    with Lookups(server, read_key) as lookups, ThreadPoolExecutor(1) as pool:
        heavy = pool.submit(timed, lambda: post_sql(http, sql))
        time.sleep(1.5)
        busy = post_sql(http, small)
        response, seconds = heavy.result()
    assert busy.status_code == 503, busy.text
    assert busy.headers["retry-after"] == "5"
    assert busy.json()["error"]["type"] == "service_busy"
    assert busy.json()["error"]["setting"] == "FEATURESTORE_TRAINING_MAX_CONCURRENT"
    assert response.status_code == 408, response.text
    error = response.json()["error"]
    assert error["type"] == "query_timeout"
    assert error["setting"] == "FEATURESTORE_TRAINING_TIMEOUT_SECONDS"
    assert TIMEOUT_SECONDS <= seconds < TIMEOUT_SECONDS + 10
    figures = lookups.check()
    print(f"time limit: 408 after {seconds:.2f} s; concurrent lookups {figures}")
    # The cancelled query gave its slot back: the next one is answered at once.
    assert post_sql(http, small).status_code == 200


def test_a_query_over_the_memory_limit_is_cancelled_with_413_while_lookups_answer(
    server: ServeProcess, http: httpx.Client, read_key: str
) -> None:
    # One list of a billion long strings: gigabytes in an ungrouped aggregate, whose state
    # DuckDB cannot spill, so the limit is reached in well under a second whatever the
    # source holds. (Grouped by driver, the same list is spilled by DuckDB's hash aggregate
    # once pushed part files cost the driver column the statistics of its perfect-hash plan:
    # 300 MB written to disk before the 413, past the time limit on a busy disk.)
    sql = (
        "SELECT 1001 AS driver_id, max(a.event_timestamp) AS event_timestamp, "
        "list(repeat(r.range::VARCHAR, 500)) AS junk FROM driver_hourly_stats a, range(1000000) r"
    )
    before = proc_status(server.proc.pid, "VmRSS")
    with Lookups(server, read_key) as lookups:
        response, seconds = timed(lambda: post_sql(http, sql))
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["type"] == "memory_limit_exceeded"
    assert error["setting"] == "FEATURESTORE_TRAINING_MEMORY_LIMIT"
    figures = lookups.check()
    after = proc_status(server.proc.pid, "VmRSS")
    print(
        f"memory limit: 413 after {seconds:.2f} s; RSS {before >> 20} -> {after >> 20} MB; "
        f"concurrent lookups {figures}"
    )


def test_a_query_past_the_spill_limit_is_cancelled_with_413_while_lookups_answer(
    repo: Repo, tmp_path: Path, read_key: str
) -> None:
    """A server of its own, with a small spill limit and time to reach it: how fast the
    spill fills depends on the disk, which the time limit must not race."""
    limits = {
        **LIMITS,
        "FEATURESTORE_TRAINING_MAX_TEMP_SIZE": "20MB",
        "FEATURESTORE_TRAINING_TIMEOUT_SECONDS": "120",
        "TMPDIR": str(tmp_path),  # the server's DuckDB spills under it, where we watch
    }
    spilling = ServeProcess(repo, tmp_path / "serve.log", **limits)
    spill_dir = tmp_path / "featurestore-duckdb"
    spilled: list[int] = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.002):
            sizes = []
            for f in spill_dir.glob("*"):
                with contextlib.suppress(OSError):  # removed between listing and stat
                    sizes.append(f.stat().st_size)
            spilled[0] = max(spilled[0], sum(sizes))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    # 50k groups of long strings: over the memory limit DuckDB's hash aggregate spills its
    # partitions to the temp directory, until the spill limit stops it.
    sql = (
        "SELECT r.range % 50000 AS driver_id, now() AS event_timestamp, "
        "list(repeat(r.range::VARCHAR, 100)) AS junk FROM range(5000000) r GROUP BY 1"
    )
    headers = {"Authorization": f"Bearer {read_key}"}
    try:
        with (
            httpx.Client(base_url=spilling.url, headers=headers, timeout=120) as http,
            Lookups(spilling, read_key) as lookups,
        ):
            response, seconds = timed(lambda: post_sql(http, sql))
    finally:
        done.set()
        watcher.join(timeout=10)
        spilling.stop()
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["type"] == "memory_limit_exceeded"
    assert "FEATURESTORE_TRAINING_MAX_TEMP_SIZE" in error["message"]
    # It did spill, up to about the limit, and left nothing behind.
    assert 0 < spilled[0] <= 21 * 2**20, spilled[0]
    assert not [f for f in spill_dir.glob("*") if f.stat().st_size], list(spill_dir.glob("*"))
    figures = lookups.check()
    print(
        f"spill limit: 413 after {seconds:.2f} s, {spilled[0] >> 20} MB spilled at most; "
        f"concurrent lookups {figures}"
    )


def test_too_many_entity_rows_from_sql_is_413_naming_the_setting(http: httpx.Client) -> None:
    sql = "SELECT driver_id, event_timestamp FROM driver_hourly_stats, range(2000)"
    response, seconds = timed(lambda: post_sql(http, sql))
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["type"] == "request_too_large"
    assert error["setting"] == "FEATURESTORE_MAX_TRAINING_ENTITY_ROWS"
    assert seconds < TIMEOUT_SECONDS


def zstd_bomb(batches: int = 8, rows: int = 1000, width: int = 128 * 1024) -> bytes:
    """A ZSTD-compressed Arrow IPC stream of a few dozen KB that decodes to over 1 GB."""
    batch = pa.record_batch(
        {
            "driver_id": pa.array([1001] * rows, pa.int64()),
            "event_timestamp": pa.array([0] * rows, pa.timestamp("us", tz="UTC")),
            "pad": pa.array(["a" * width] * rows),
        }
    )
    sink = io.BytesIO()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, batch.schema, options=options) as writer:
        for _ in range(batches):
            writer.write_batch(batch)
    return sink.getvalue()


def test_a_zstd_bomb_is_refused_with_413_and_server_memory_stays_flat(
    server: ServeProcess, http: httpx.Client
) -> None:
    bomb = zstd_bomb()
    assert len(bomb) < 128 * 1024
    pid = server.proc.pid
    rss_before, peak_before = proc_status(pid, "VmRSS"), proc_status(pid, "VmHWM")
    health: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                start = time.perf_counter()
                assert client.get("/health").status_code == 200
                health.append(time.perf_counter() - start)
                stop.wait(0.01)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    while len(health) < 3:
        time.sleep(0.01)
    try:
        for _ in range(5):
            response, seconds = timed(
                lambda: http.post(
                    "/training-dataset",
                    params={"features": "driver_hourly_stats:conv_rate"},
                    content=bomb,
                    headers={"Content-Type": ARROW_STREAM},
                )
            )
            assert response.status_code == 413, response.text
            error = response.json()["error"]
            assert error["type"] == "request_too_large"
            assert error["setting"] == "FEATURESTORE_MAX_TRAINING_UPLOAD_BYTES"
    finally:
        stop.set()
        prober.join(timeout=30)
    rss_after, peak_after = proc_status(pid, "VmRSS"), proc_status(pid, "VmHWM")
    print(
        f"bomb: {len(bomb)} B compressed, 413 in {seconds * 1000:.0f} ms; RSS "
        f"{rss_before >> 20} -> {rss_after >> 20} MB, peak {peak_before >> 20} -> "
        f"{peak_after >> 20} MB; /health max {max(health) * 1000:.0f} ms over {len(health)}"
    )
    # It inflates to over 1 GB: anything near that would show in the peak.
    assert peak_after - peak_before < 100 * 1024 * 1024
    assert max(health) < 1.0


def test_an_upload_within_the_limits_still_works(http: httpx.Client) -> None:
    rows = pa.table(
        {
            "driver_id": pa.array([1001, 1002], pa.int64()),
            "event_timestamp": pa.array([0, 0], pa.timestamp("us", tz="UTC")),
        }
    )
    sink = io.BytesIO()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, rows.schema, options=options) as writer:
        writer.write_table(rows)
    response = http.post(
        "/training-dataset",
        params={"features": "driver_hourly_stats:conv_rate"},
        content=sink.getvalue(),
        headers={"Content-Type": ARROW_STREAM},
    )
    assert response.status_code == 200, response.text
    assert pa.ipc.open_stream(io.BytesIO(response.content)).read_all().num_rows == 2


class _SlowStream(httpx.SyncByteStream):
    """A response body read slowly after its first chunk (a client that stalls)."""

    def __init__(self, inner: Any, pause: float) -> None:
        self._inner = inner
        self._pause = pause

    def __iter__(self) -> Iterator[bytes]:
        for i, chunk in enumerate(self._inner):
            yield chunk
            if i == 0:
                time.sleep(self._pause)

    def close(self) -> None:
        self._inner.close()


class _StallingTransport(httpx.BaseTransport):
    """Injects the fault: the client stops reading for ``pause`` seconds mid-stream."""

    def __init__(self, pause: float) -> None:
        self._inner = httpx.HTTPTransport()
        self._pause = pause

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_SlowStream(response.stream, self._pause),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._inner.close()


def test_the_time_limit_covers_streaming_and_the_sdk_reports_the_cut(
    server: ServeProcess, read_key: str
) -> None:
    # ~400k rows of ~300 bytes: far more than socket buffers hold, so the server is still
    # streaming when the client stalls past the limit.
    sql = (
        "SELECT driver_id, event_timestamp, repeat('x', 200) AS pad "
        "FROM driver_hourly_stats, range(400) ORDER BY ALL"
    )
    client = httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {read_key}"},
        transport=_StallingTransport(TIMEOUT_SECONDS + 3),
        timeout=120,
    )
    with client, pytest.raises(FeatureStoreError, match="ended early"):
        get_training_dataset(sql, DRIVER_FEATURES, http_client=client, output="arrow")
    deadline = time.monotonic() + 10
    while "cut after it started" not in server.log.read_text():
        assert time.monotonic() < deadline, server.log.read_text()[-2000:]
        time.sleep(0.2)
    assert "ran past its" in server.log.read_text()


def test_the_same_query_read_promptly_streams_whole_through_the_sdk(
    server: ServeProcess, read_key: str, repo: Repo
) -> None:
    """Batches of ~16 MB arrive in network chunks of ~64 KB; the SDK must join them."""
    sql = (
        "SELECT driver_id, event_timestamp, repeat('x', 200) AS pad "
        "FROM driver_hourly_stats, range(400) ORDER BY ALL"
    )
    headers = {"Authorization": f"Bearer {read_key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
        table = get_training_dataset(sql, DRIVER_FEATURES, http_client=client, output="arrow")
    assert isinstance(table, pa.Table)
    # Offline pushes by other tests land as parts beside the source file, which reads see.
    files = source_files(str(repo.path / "data" / "driver_stats.parquet"))
    source_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    assert table.num_rows == source_rows * 400
    assert table.column_names[-5:] == [f.split(":")[1] for f in DRIVER_FEATURES]
