"""Service test fixtures: one real repo (our plugins), real Redis, an in-process client.

The session repo is the ride-hailing example (``feature_repo/definitions.py``) with a
SQLite registry and its own private ``redis-server``, generated data ending an hour
ago and materialized once, so every test reads the same known state. Tests that
write use entity ids the generator never produces (>= 900_000 for drivers).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml
from fastapi import FastAPI

from online_store.embedded import EmbeddedRedis, free_port
from service.app import create_app
from service.auth import KeyStore, Scope, open_key_engine
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@dataclass(frozen=True)
class Repo:
    path: Path
    registry_url: str
    redis_url: str
    end: datetime

    def table(self, name: str) -> pa.Table:
        return pq.read_table(self.path / "data" / f"{name}.parquet")

    def latest(self, name: str, keys: list[str]) -> dict[tuple[Any, ...], dict[str, Any]]:
        """Naive reference: newest row per entity by (event_timestamp, created)."""
        rows = self.table(name).to_pylist()
        best: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in rows:
            key = tuple(row[k] for k in keys)
            cur = best.get(key)
            if cur is None or (row["event_timestamp"], row["created"]) > (
                cur["event_timestamp"],
                cur["created"],
            ):
                best[key] = row
        return best


def write_yaml(
    path: Path, *, registry_url: str, redis_url: str, stock: bool, project: str = "rides"
) -> None:
    """feature_store.yaml: our plugins, or stock Feast's Redis store (for `feast serve`)."""
    online: dict[str, Any]
    if stock:
        rest = redis_url.split("://", 1)[1]
        hostport, _, db = rest.partition("/")
        online = {"type": "redis", "connection_string": f"{hostport},db={db or 0}"}
    else:
        # No connection_string: like feature_repo/, Redis comes from FEATURESTORE_REDIS_URL.
        online = {"type": "online_store.store.FastRedisOnlineStore"}
    config = {
        "project": project,
        "provider": "local",
        # Like feature_repo/: the registry URL comes from the environment (or Settings).
        "registry": {
            "registry_type": "sql",
            "path": registry_url if stock else "${FEATURESTORE_REGISTRY_URL}",
            "cache_ttl_seconds": 1,
        },
        "online_store": online,
        "offline_store": {
            "type": "file" if stock else "offline_store.store.DuckDBParquetOfflineStore"
        },
        "entity_key_serialization_version": 3,
    }
    if not stock:
        config["batch_engine"] = {"type": "online_store.engine.StreamingMaterializationEngine"}
    (path / "feature_store.yaml").write_text(yaml.safe_dump(config))


def feast_cli(
    repo: Path, redis_url: str, registry_url: str, *args: str, timeout: float = 120
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTORE_")}
    env["PYTHONPATH"] = str(ROOT)
    env["FEATURESTORE_REDIS_URL"] = redis_url
    env["FEATURESTORE_REGISTRY_URL"] = registry_url
    subprocess.run(
        [str(Path(sys.executable).parent / "feast"), *args],
        cwd=repo,
        env=env,
        check=True,
        timeout=timeout,
        capture_output=True,
    )


@pytest.fixture(scope="session")
def service_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("service-redis"), persistent=False)
    server.start()
    yield server
    server.stop()


def build_repo(
    path: Path,
    *,
    registry_url: str,
    redis_url: str,
    rows: int = 1000,
    seed: int = 11,
    end: datetime | None = None,
) -> Repo:
    """The example definitions with generated data ending at ``end`` (default an hour
    ago), applied and materialized with our plugins."""
    sys.path.insert(0, str(ROOT / "feature_repo"))
    from generate import generate  # the repo's seeded generator

    (path / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "feature_repo" / "definitions.py", path / "definitions.py")
    write_yaml(path, registry_url=registry_url, redis_url=redis_url, stock=False)
    end = end or (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    generate(path / "data", rows=rows, seed=seed, end=end)
    feast_cli(path, redis_url, registry_url, "apply")
    start = (end - timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%S")
    stop = (end + timedelta(seconds=1)).isoformat()
    feast_cli(path, redis_url, registry_url, "materialize", start, stop)
    return Repo(path=path, registry_url=registry_url, redis_url=redis_url, end=end)


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory, service_redis: EmbeddedRedis) -> Repo:
    path = tmp_path_factory.mktemp("repo")
    registry_url = f"sqlite:///{path / 'data' / 'registry.db'}"
    return build_repo(path, registry_url=registry_url, redis_url=service_redis.url)


class AppClient:
    """An httpx client over ``ASGITransport`` with the app's lifespan running.

    The app lives on its own event loop thread so session-scoped apps work from plain
    synchronous tests.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._lifespan = app.router.lifespan_context(app)
        self.run(self._lifespan.__aenter__())
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://testserver")

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=120)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.run(self.client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    @property
    def state(self) -> Any:
        return self.app.state.services

    def close(self) -> None:
        self.run(self.client.aclose())
        self.run(self._lifespan.__aexit__(None, None, None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def make_settings(repo: Repo, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "repo_path": repo.path,
        "redis_url": repo.redis_url,
        "registry_url": repo.registry_url,
        "registry_refresh_seconds": 0.5,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def client(repo: Repo) -> Iterator[AppClient]:
    app_client = AppClient(create_app(make_settings(repo, max_entities_per_request=500)))
    yield app_client
    app_client.close()


@pytest.fixture
def app_factory(repo: Repo) -> Iterator[Any]:
    """Build extra apps with other settings; closed after the test."""
    made: list[AppClient] = []

    def make(**overrides: Any) -> AppClient:
        app_client = AppClient(create_app(make_settings(repo, **overrides)))
        made.append(app_client)
        return app_client

    yield make
    for app_client in made:
        app_client.close()


def columns(body: dict[str, Any]) -> dict[str, dict[str, list[Any]]]:
    """Feast's column-oriented response indexed by feature name."""
    names = body["metadata"]["feature_names"]
    assert len(names) == len(body["results"])
    return dict(zip(names, body["results"], strict=True))


def rfc3339(ts: datetime) -> str:
    """What the service (and Feast) print for an event time."""
    ts = ts.astimezone(UTC)
    base = ts.strftime("%Y-%m-%dT%H:%M:%S")
    if ts.microsecond == 0:
        return base + "Z"
    if ts.microsecond % 1000 == 0:
        return f"{base}.{ts.microsecond // 1000:03d}Z"
    return f"{base}.{ts.microsecond:06d}Z"


def some_ids(repo: Repo, table: str, column: str, n: int) -> list[Any]:
    values = pc.unique(repo.table(table).column(column)).to_pylist()
    return sorted(values)[:n]


class ServeProcess:
    """A ``featurestore serve`` subprocess on the repo's Redis and registry, ready.

    ``extra`` are CLI arguments; ``settings`` extra ``FEATURESTORE_*`` variables.
    """

    def __init__(self, repo: Repo, log: Path, *extra: str, **settings: str) -> None:
        self.port = free_port()
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTORE_")}
        env.update(
            PYTHONPATH=str(ROOT),
            FEATURESTORE_REDIS_URL=repo.redis_url,
            FEATURESTORE_REGISTRY_URL=repo.registry_url,
            **settings,
        )
        cmd = [sys.executable, "-m", "service.cli", "serve", "--repo", str(repo.path)]
        self.proc = subprocess.Popen(
            [*cmd, "--port", str(self.port), *extra],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None or time.monotonic() >= deadline:
                # Stopped first: a supervisor left running respawns its dying workers forever
                # and slows every later test.
                raise AssertionError(f"featurestore serve did not get ready:\n{self.stop()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.log.read_text()


@pytest.fixture(scope="module")
def read_key(repo: Repo, request: pytest.FixtureRequest) -> Iterator[str]:
    """A key of scope ``read`` for the session repo's project, named after the test module."""
    engine: sa.Engine = open_key_engine(repo.registry_url, 5)
    try:
        yield KeyStore(engine, project="rides").create(Scope.READ, name=request.module.__name__)
    finally:
        engine.dispose()


@contextmanager
def running_feast_serve(stock: Path) -> Iterator[httpx.Client]:
    """Stock `feast serve` on the repo at ``stock`` (its feature_store.yaml), until exit."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTORE_")}
    env["PYTHONPATH"] = str(ROOT)
    log = (stock / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "feast"), "-c", str(stock), "serve",
         "-h", "127.0.0.1", "-p", str(port), "--no-access-log", "-r", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (stock / "serve.log").read_text()[-3000:]
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "feast serve did not start"
            time.sleep(0.3)
        yield client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def feast_serve(repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """Stock `feast serve` on the session repo's registry and Redis (Feast's own Redis store)."""
    stock = tmp_path_factory.mktemp("stock-repo")
    write_yaml(stock, registry_url=repo.registry_url, redis_url=repo.redis_url, stock=True)
    with running_feast_serve(stock) as client:
        yield client


def new_repo(
    tmp_path_factory: pytest.TempPathFactory, name: str, definitions: str
) -> tuple[Path, datetime]:
    """A repo directory holding ``definitions`` (and an empty ``data/``), and the event time
    an hour ago, whole seconds, for its rows (materialized up to it)."""
    path = tmp_path_factory.mktemp(name) / "repo"
    (path / "data").mkdir(parents=True)
    (path / "definitions.py").write_text(definitions)
    return path, datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


@contextmanager
def ours_and_feast_serve(
    path: Path, *, project: str, redis_url: str, when: datetime
) -> Iterator[tuple[AppClient, httpx.Client]]:
    """Our app and stock `feast serve` on the repo at ``path`` (definitions and data
    written), applied and materialized up to ``when`` into one registry and Redis."""
    registry_url = f"sqlite:///{path / 'data' / 'registry.db'}"
    write_yaml(path, registry_url=registry_url, redis_url=redis_url, stock=False, project=project)
    feast_cli(path, redis_url, registry_url, "apply")
    start, end = (when - timedelta(days=1)).isoformat(), (when + timedelta(seconds=1)).isoformat()
    feast_cli(path, redis_url, registry_url, "materialize", start, end)
    stock = Path(str(path) + "-stock")
    stock.mkdir()
    write_yaml(stock, registry_url=registry_url, redis_url=redis_url, stock=True, project=project)
    repo = Repo(path=path, registry_url=registry_url, redis_url=redis_url, end=when)
    ours = AppClient(create_app(make_settings(repo)))
    try:
        with running_feast_serve(stock) as feast:
            yield ours, feast
    finally:
        ours.close()
