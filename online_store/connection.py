"""Redis connection resolution for the online store plugin and the engine.

Order: the config's ``connection_string`` (Feast's ``host:port,db=0,password=..,ssl=true``
format, or a ``redis://`` / ``rediss://`` URL); else ``FEATURESTORE_REDIS_URL``; else an
embedded ``redis-server`` under ``<repo>/data/redis``, started on first use and stopped
at exit if this process started it. Passwords never reach a log line or an error message.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster

from online_store.embedded import EmbeddedRedis

logger = logging.getLogger(__name__)

REDIS_URL_ENV = "FEATURESTORE_REDIS_URL"
_embedded: dict[Path, EmbeddedRedis] = {}
_embedded_lock = threading.Lock()


def parse_connection_string(connection_string: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Split Feast's ``host:port,key=value,..`` string into nodes and client kwargs.

    Returns:
        (startup nodes as ``{"host", "port"}`` dicts, keyword arguments for redis-py).
    """
    nodes: list[dict[str, Any]] = []
    params: dict[str, Any] = {}
    for part in connection_string.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" in part:
            key, value = part.split("=", 1)
            try:
                params[key] = json.loads(value)
            except json.JSONDecodeError:
                params[key] = value
        else:
            host, _, port = part.rpartition(":")
            nodes.append({"host": host or part, "port": int(port) if host else 6379})
    return nodes, params


def redact(url: str) -> str:
    """A URL or connection string with any password replaced by ``***``."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0] if ":" in creds else ""
        return f"{scheme}://{user}:***@{host}"
    return ",".join(
        "password=***" if p.strip().startswith("password=") else p for p in url.split(",")
    )


def _embedded_url(repo_path: Path) -> str:
    data_dir = (repo_path / "data" / "redis").resolve()
    with _embedded_lock:
        server = _embedded.get(data_dir)
        if server is None:
            server = EmbeddedRedis(data_dir)
            server.start()
            _embedded[data_dir] = server
            if server.owned:
                atexit.register(server.stop)
                logger.info(
                    "started embedded redis-server at %s (data in %s)", server.url, data_dir
                )
        return server.url


def resolve_target(connection_string: str | None, repo_path: Path | None) -> str:
    """The connection string or URL to use (see module docstring for the order)."""
    if connection_string:
        return connection_string
    env = os.environ.get(REDIS_URL_ENV)
    if env:
        return env
    return _embedded_url(Path(repo_path) if repo_path else Path.cwd())


def make_client(target: str, *, cluster: bool, timeout: float = 30.0) -> redis.Redis | RedisCluster:
    """A synchronous redis-py client (bytes replies) for a URL or Feast connection string.

    Args:
        target: ``redis://`` URL or Feast connection string.
        cluster: build a ``RedisCluster`` client.
        timeout: seconds any connect or call may take (unless the target sets its own).

    Returns:
        The client; it connects lazily.
    """
    bounds = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if "://" in target:
        if cluster:
            return RedisCluster.from_url(target, **bounds)
        return redis.Redis.from_url(target, **bounds)
    nodes, params = parse_connection_string(target)
    params = {**bounds, **params}
    if cluster:
        params.pop("db", None)
        return RedisCluster(
            startup_nodes=[ClusterNode(n["host"], n["port"]) for n in nodes], **params
        )
    node: dict[str, Any] = nodes[0] if nodes else {"host": "localhost", "port": 6379}
    return redis.Redis(host=str(node["host"]), port=int(node["port"]), **params)
