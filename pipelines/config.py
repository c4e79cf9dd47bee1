"""Where the store is: repo path, registry URL and Redis URL for a pipeline task.

Each value comes from the first place that has it: an explicit value (a DAG param or a
component argument), then the extras of an Airflow connection when one is given, then the
project's environment variables (``FEATURESTORE_REPO_PATH``, ``FEATURESTORE_REGISTRY_URL``,
``FEATURESTORE_REDIS_URL``). Nothing is hard-coded: a task that cannot find the repo fails
and says where it looked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from foundation.environment import REDIS_ENV, REGISTRY_ENV, default_registry_url, sqlalchemy_url
from foundation.errors import InvalidRequestError

REPO_ENV = "FEATURESTORE_REPO_PATH"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """A feature repo and its two backends.

    Attributes:
        repo_path: the Feast repo (``feature_store.yaml``).
        registry_url: SQLAlchemy URL of the SQL registry.
        redis_url: the online store's Redis, or ``None`` to leave it to the repo's config.
    """

    repo_path: Path
    registry_url: str
    redis_url: str | None

    @property
    def sqlalchemy_url(self) -> str:
        """The registry URL as SQLAlchemy wants it (``postgresql://`` pinned to psycopg 3)."""
        return sqlalchemy_url(self.registry_url)


def resolve_config(
    explicit: Mapping[str, str | None] | None = None,
    connection_extra: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> StoreConfig:
    """Pick each setting from ``explicit``, then ``connection_extra``, then ``environ``.

    Args:
        explicit: ``repo_path``, ``registry_url``, ``redis_url`` given to the task (empty
            strings and ``None`` count as unset).
        connection_extra: the extras of an Airflow connection, same keys.
        environ: the environment (default ``os.environ``).

    Returns:
        The resolved settings; the registry defaults to the repo's SQLite file like the CLI.

    Raises:
        InvalidRequestError: no repo path anywhere, or it has no ``feature_store.yaml``.
    """
    env = os.environ if environ is None else environ
    sources: list[Mapping[str, object]] = [explicit or {}, connection_extra or {}]
    env_names = {"repo_path": REPO_ENV, "registry_url": REGISTRY_ENV, "redis_url": REDIS_ENV}

    def pick(key: str) -> str | None:
        for source in sources:
            value = source.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        return env.get(env_names[key]) or None

    repo = pick("repo_path")
    if repo is None:
        raise InvalidRequestError(
            f"no feature repo given: set the repo_path param, a connection extra "
            f"'repo_path', or {REPO_ENV}",
        )
    path = Path(repo).resolve()
    if not (path / "feature_store.yaml").is_file():
        raise InvalidRequestError(
            f"{path} has no feature_store.yaml; point repo_path (or {REPO_ENV}) at a Feast repo"
        )
    return StoreConfig(
        repo_path=path,
        registry_url=pick("registry_url") or default_registry_url(path),
        redis_url=pick("redis_url"),
    )


@contextmanager
def store_environment(config: StoreConfig) -> Iterator[None]:
    """Export the backends for Feast (``feature_store.yaml`` reads them from the environment).

    The previous values come back on exit, so one worker process can run tasks for
    several stores one after another.
    """
    wanted = {REGISTRY_ENV: config.registry_url, REPO_ENV: str(config.repo_path)}
    if config.redis_url is not None:
        wanted[REDIS_ENV] = config.redis_url
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
