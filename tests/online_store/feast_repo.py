"""Throwaway Feast repos for tests: feature_store.yaml, a SQLite SQL registry, Parquet data.

Definitions are built in Python by a factory (called once per repo so that two repos get
equal but independent objects) and applied with ``FeatureStore.apply``. Stores are
:class:`foundation.registry.FeatureStore` (Feast's, with snapshots that carry their
content version), so stores opened one after another in a test process never read each
other's definitions; the online stores and engines compared are stock or ours per spec.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from foundation.registry import FeatureStore

OURS_ONLINE = "online_store.store.FastRedisOnlineStore"
OURS_ENGINE = "online_store.engine.StreamingMaterializationEngine"
DUCKDB = "offline_store.store.DuckDBParquetOfflineStore"


@dataclass(frozen=True)
class RepoSpec:
    project: str
    redis_url: str
    ours_online: bool
    ours_engine: bool
    offline: str = "file"
    key_ttl_seconds: int | None = None
    registry_path: Path | None = None
    engine_options: dict[str, Any] | None = None


def to_connection_string(redis_url: str) -> str:
    """Feast's ``host:port,db=N`` form of a ``redis://host:port/N`` URL."""
    rest = redis_url.split("://", 1)[1]
    hostport, _, db = rest.partition("/")
    return f"{hostport},db={db or 0}"


def write_repo(path: Path, spec: RepoSpec) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    online: dict[str, Any] = {
        "type": OURS_ONLINE if spec.ours_online else "redis",
        "connection_string": (
            spec.redis_url if spec.ours_online else to_connection_string(spec.redis_url)
        ),
    }
    if spec.key_ttl_seconds:
        online["key_ttl_seconds"] = spec.key_ttl_seconds
    config = {
        "project": spec.project,
        "provider": "local",
        "registry": {
            "registry_type": "sql",
            "path": f"sqlite:///{spec.registry_path or path / 'registry.db'}",
            "cache_ttl_seconds": 0,
        },
        "online_store": online,
        "offline_store": {"type": spec.offline},
        "batch_engine": (
            {"type": OURS_ENGINE, **(spec.engine_options or {})} if spec.ours_engine else "local"
        ),
        "entity_key_serialization_version": 3,
    }
    (path / "feature_store.yaml").write_text(yaml.safe_dump(config))
    return path


def make_store(path: Path, spec: RepoSpec, objects: Callable[[], Sequence[Any]]) -> FeatureStore:
    write_repo(path, spec)
    store = FeatureStore(repo_path=str(path))
    store.apply(list(objects()))
    return store


def open_store(path: Path, spec: RepoSpec) -> FeatureStore:
    """A store over an existing registry (no apply), e.g. stock Feast reading our Redis."""
    write_repo(path, spec)
    return FeatureStore(repo_path=str(path))
