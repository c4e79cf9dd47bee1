"""Defaults for the two backends, shared by the CLI, the demo and the tests.

``feature_repo/feature_store.yaml`` reads the registry URL from
``FEATURESTORE_REGISTRY_URL`` (Feast expands environment variables in that file).
When it is unset, the tooling points it at a SQLite file under the repo's
``data/`` folder. ``FEATURESTORE_REDIS_URL`` unset means: start an embedded
``redis-server`` whose data also lives under ``data/`` (``service.local_backends``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from feast.repo_config import RepoConfig

from foundation.errors import FeatureStoreError, InvalidRequestError
from foundation.registry import FeatureStore

REGISTRY_ENV = "FEATURESTORE_REGISTRY_URL"
REDIS_ENV = "FEATURESTORE_REDIS_URL"
_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


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


def expand(text: str, env: Mapping[str, str]) -> str:
    """``os.path.expandvars`` (unknown variables stay as written) over an explicit mapping."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return env.get(name, match.group(0))

    return _VAR.sub(sub, text)


def read_repo_yaml(repo: Path, overrides: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``<repo>/feature_store.yaml`` parsed, variables expanded as Feast does, except that
    ``FEATURESTORE_REGISTRY_URL`` defaults to the SQLite registry under ``data/`` and
    ``overrides`` win over the environment (which is not modified).

    Raises:
        FeatureStoreError: no such file, or not a YAML mapping.
    """
    yaml_path = Path(repo) / "feature_store.yaml"
    if not yaml_path.is_file():
        raise FeatureStoreError(
            f"no feature_store.yaml in {repo}; pass --repo (FEATURESTORE_REPO_PATH) "
            "pointing at a Feast repo"
        )
    env = {**os.environ, **(overrides or {})}
    if not env.get(REGISTRY_ENV):
        env[REGISTRY_ENV] = default_registry_url(repo)
        data_dir(repo).mkdir(parents=True, exist_ok=True)  # SQLite creates files, not folders
    raw = yaml.safe_load(expand(yaml_path.read_text(), env))
    if not isinstance(raw, dict):
        raise FeatureStoreError(f"{yaml_path} is not a Feast repo config (a YAML mapping)")
    return raw


def repo_config(raw: dict[str, Any], repo: Path) -> RepoConfig:
    """Feast's config from :func:`read_repo_yaml`'s mapping, with ``repo_path`` set.

    Raises:
        FeatureStoreError: Feast refuses the config.
    """
    try:
        config = RepoConfig(**raw)
    except Exception as exc:  # pydantic errors from Feast's own config classes
        raise FeatureStoreError(f"invalid {Path(repo) / 'feature_store.yaml'}: {exc}") from exc
    config.repo_path = Path(repo)
    return config


def open_repo(repo: str | Path) -> FeatureStore:
    """A Feast store on ``repo`` with the tooling's defaults (see :func:`read_repo_yaml`).

    Unlike a plain ``FeatureStore(repo)``, it works in a fresh shell: an unset
    ``FEATURESTORE_REGISTRY_URL`` means the SQLite registry under ``<repo>/data/``.
    """
    path = Path(repo).resolve()
    return FeatureStore(repo_path=str(path), config=repo_config(read_repo_yaml(path), path))
