"""Defaults for the two backends, shared by the CLI, the demo and the tests.

``feature_repo/feature_store.yaml`` reads the registry URL from
``FEATURESTORE_REGISTRY_URL`` (Feast expands environment variables in that file).
When it is unset, the tooling points it at a SQLite file under the repo's
``data/`` folder. ``FEATURESTORE_REDIS_URL`` unset means: start an embedded
``redis-server`` whose data also lives under ``data/`` (``service.local_backends``).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from foundation.errors import InvalidRequestError

REGISTRY_ENV = "FEATURESTORE_REGISTRY_URL"
REDIS_ENV = "FEATURESTORE_REDIS_URL"


def data_dir(repo: Path) -> Path:
    """Where generated Parquet, the SQLite registry and embedded Redis files live."""
    return Path(repo).resolve() / "data"


def default_registry_url(repo: Path) -> str:
    """The SQLite registry used when ``FEATURESTORE_REGISTRY_URL`` is unset."""
    return f"sqlite:///{data_dir(repo) / 'registry.db'}"


def registry_url(repo: Path) -> str:
    """``FEATURESTORE_REGISTRY_URL`` if set, else the SQLite default for ``repo``."""
    return os.environ.get(REGISTRY_ENV) or default_registry_url(repo)


def sqlalchemy_url(url: str) -> str:
    """``url`` with a bare ``postgresql://`` scheme pinned to psycopg 3, as Feast does."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def repo_project(repo: Path) -> str:
    """The ``project:`` of ``<repo>/feature_store.yaml``.

    Raises:
        InvalidRequestError: no such file, or it names no project.
    """
    config = Path(repo) / "feature_store.yaml"
    try:
        project = yaml.safe_load(config.read_text()).get("project")
    except (OSError, AttributeError, yaml.YAMLError):
        project = None
    if not isinstance(project, str) or not project:
        raise InvalidRequestError(
            f"cannot read the project from {config}; pass --repo with a Feast repo or "
            "--project NAME"
        )
    return project


def configured_redis(repo: Path) -> str | None:
    """The Redis the environment or the repo names, if any (no embedded one needed then).

    ``FEATURESTORE_REDIS_URL`` first, else the ``online_store.connection_string`` of
    ``<repo>/feature_store.yaml`` (environment variables expanded, as Feast does).

    Returns:
        The URL or Feast connection string, or ``None`` when nothing names a Redis.
    """
    if os.environ.get(REDIS_ENV):
        return os.environ[REDIS_ENV]
    try:
        raw = yaml.safe_load(os.path.expandvars((Path(repo) / "feature_store.yaml").read_text()))
    except (OSError, yaml.YAMLError):
        return None
    online = raw.get("online_store") if isinstance(raw, dict) else None
    target = online.get("connection_string") if isinstance(online, dict) else None
    # An unexpanded ${VAR} names nothing: Feast would fail on it, the embedded one would not.
    if isinstance(target, str) and target.strip() and "${" not in target:
        return target.strip()
    return None


def export_lines(repo: Path) -> list[str]:
    """Shell ``export`` lines that make plain ``feast`` commands use the defaults."""
    lines = [f"export {REGISTRY_ENV}='{registry_url(repo)}'"]
    if os.environ.get(REDIS_ENV):
        lines.append(f"export {REDIS_ENV}='{os.environ[REDIS_ENV]}'")
    return lines
