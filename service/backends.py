"""Opening the backends the service talks to: the Feast store (registry) and Redis.

Kept apart from ``app.py`` so tests and the benchmark can open the same things the
service does, and so the rules for defaults (embedded Redis, SQLite registry) live
in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

import redis
import redis.asyncio as aioredis
from feast.repo_config import RepoConfig
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

from foundation import environment
from foundation.registry import FeatureStore
from online_store.connection import parse_connection_string, resolve_target
from service.redis_fast import FastRedis
from service.settings import Settings


def load_repo_config(settings: Settings) -> RepoConfig:
    """Read ``feature_store.yaml`` with the registry URL from ``settings``.

    Args:
        settings: service settings (``repo_path``, ``registry_url``, ``redis_url``).

    Returns:
        The Feast repo config, with ``repo_path`` set.

    Raises:
        FeatureStoreError: the repo or its ``feature_store.yaml`` is missing or invalid.
    """
    repo = settings.resolved_repo_path()
    overrides = {environment.REGISTRY_ENV: settings.resolved_registry_url()}
    if settings.redis_url:
        overrides[environment.REDIS_ENV] = settings.redis_url
    raw = environment.read_repo_yaml(repo, overrides)
    online = raw.get("online_store")
    if settings.redis_url and isinstance(online, dict) and not online.get("connection_string"):
        # Pin the store's own client (materialize jobs, writes through Feast) to the Redis
        # the service reads, whatever this process's environment says.
        online["connection_string"] = (
            _as_connection_string(settings.redis_url)
            if online.get("type", "redis") == "redis"
            else settings.redis_url
        )
    return environment.repo_config(raw, repo)


def open_feature_store(settings: Settings) -> FeatureStore:
    """A :class:`feast.FeatureStore` for the repo in ``settings``."""
    config = load_repo_config(settings)
    return FeatureStore(repo_path=str(settings.resolved_repo_path()), config=config)


def _as_url(target: str) -> str:
    """A ``redis://`` URL for a URL or Feast connection string (``host:port,db=0,...``)."""
    if "://" in target:
        return target
    nodes, params = parse_connection_string(target)
    node = nodes[0] if nodes else {"host": "localhost", "port": 6379}
    scheme = "rediss" if params.get("ssl") in (True, "true") else "redis"
    auth = ""
    if "password" in params:
        user = quote(str(params.get("username", "")), safe="")
        auth = f"{user}:{quote(str(params['password']), safe='')}@"
    return f"{scheme}://{auth}{node['host']}:{node['port']}/{params.get('db', 0)}"


def _as_connection_string(url: str) -> str:
    """Feast's ``host:port,db=N[,password=..][,ssl=true]`` form of a ``redis://`` URL."""
    parsed = urlparse(url)
    parts = [f"{parsed.hostname or 'localhost'}:{parsed.port or 6379}"]
    parts.append(f"db={(parsed.path or '/0').lstrip('/') or 0}")
    if parsed.password:
        parts.append(f"password={unquote(parsed.password)}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def resolve_redis_url(settings: Settings, config: RepoConfig) -> str:
    """Which Redis to use: the same one the online store plugin writes to.

    Order, as ``online_store.connection.resolve_target``: the repo's
    ``online_store.connection_string``; else ``FEATURESTORE_REDIS_URL``
    (``settings.redis_url``); else the embedded server under ``<repo>/data/redis``
    (reused if another process runs it; started and stopped at exit otherwise).

    Args:
        settings: service settings.
        config: the repo config.

    Returns:
        A ``redis://`` URL.

    Raises:
        BackendUnavailableError: the embedded Redis cannot be started.
    """
    connection_string = getattr(config.online_store, "connection_string", None)
    if connection_string and "connection_string" in config.online_store.model_fields_set:
        return _as_url(str(connection_string))
    if settings.redis_url:
        return _as_url(settings.redis_url)
    repo = Path(config.repo_path or settings.resolved_repo_path())
    return resolve_target(None, repo)


def _redis_type(config: RepoConfig) -> str:
    redis_type = getattr(config.online_store, "redis_type", "redis")
    return str(getattr(redis_type, "value", redis_type))


def is_cluster(config: RepoConfig) -> bool:
    """Whether the repo's online store is a Redis Cluster (``redis_type: redis_cluster``)."""
    return _redis_type(config) == "redis_cluster"


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """Where Sentinel tells the master of ``master`` (``redis_type: redis_sentinel``)."""

    sentinels: list[tuple[str, int]]
    master: str
    connection_kwargs: dict[str, Any]


def sentinel_target(config: RepoConfig) -> SentinelTarget | None:
    """The repo's Sentinel setup, as the online store plugin (and Feast) read it: the
    ``connection_string`` lists the sentinels, its ``key=value`` parts are the client's
    arguments, ``sentinel_master`` names the master. ``None`` unless ``redis_sentinel``."""
    if _redis_type(config) != "redis_sentinel":
        return None
    online = config.online_store
    nodes, params = parse_connection_string(
        resolve_target(getattr(online, "connection_string", None), config.repo_path)
    )
    return SentinelTarget(
        [(str(n["host"]), int(n["port"])) for n in nodes],
        str(getattr(online, "sentinel_master", "mymaster")),
        params,
    )


def open_clients(
    url: str, settings: Settings, *, cluster: bool, sentinel: SentinelTarget | None = None
) -> tuple[Any, Any, Any]:
    """The three clients of a worker: lookups, async bookkeeping, blocking writes.

    Args:
        url: Redis URL (any node of a cluster).
        settings: timeouts and pool sizes.
        cluster: use redis-py's cluster clients (slot routing) for all three.
        sentinel: use redis-py's Sentinel clients, which find the current master and
            follow a failover (``url`` is then not used).

    Returns:
        (lookup client, asyncio client, blocking client). On a single server, lookups
        use :class:`~service.redis_fast.FastRedis`.
    """
    timeout = settings.redis_timeout_seconds
    if sentinel is not None:
        options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        options |= sentinel.connection_kwargs
        aclient = AsyncSentinel(sentinel.sentinels, **options).master_for(sentinel.master)
        sync = Sentinel(sentinel.sentinels, **options).master_for(sentinel.master)
        return aclient, aclient, sync
    if not cluster:
        reader = FastRedis(url, timeout=settings.redis_timeout_seconds)
        return reader, open_redis(url, settings), open_sync_redis(url, settings)
    aclient = aioredis.RedisCluster.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    sync = redis.RedisCluster.from_url(
        url, socket_timeout=max(timeout, 10.0), socket_connect_timeout=timeout
    )
    # One asyncio cluster client serves both lookups and bookkeeping.
    return aclient, aclient, sync


def open_redis(url: str, settings: Settings) -> aioredis.Redis:
    """An asyncio Redis client with a bounded, blocking connection pool.

    A blocking pool makes bursts wait for a free connection (up to the Redis timeout)
    instead of failing, and caps the connections one worker opens.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_timeout_seconds,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
    )
    return aioredis.Redis(connection_pool=pool)


def open_sync_redis(url: str, settings: Settings) -> redis.Redis:
    """A blocking Redis client for work done in threads (writes, job bookkeeping)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=max(settings.redis_timeout_seconds, 10.0),
        socket_connect_timeout=settings.redis_timeout_seconds,
    )


__all__ = [
    "is_cluster",
    "load_repo_config",
    "open_clients",
    "open_feature_store",
    "open_redis",
    "open_sync_redis",
    "resolve_redis_url",
    "sentinel_target",
]
