"""Where a pipeline task finds the store: explicit values, a connection's extras, the env."""

from __future__ import annotations

from pathlib import Path

import pytest

from foundation.errors import InvalidRequestError
from pipelines.config import resolve_config, store_environment


def _repo(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    (path / "feature_store.yaml").write_text("project: p\n")
    return path


def test_explicit_values_beat_the_connection_which_beats_the_environment(tmp_path: Path) -> None:
    env_repo, conn_repo, param_repo = (_repo(tmp_path, n) for n in ("env", "conn", "param"))
    environ = {
        "FEATURESTORE_REPO_PATH": str(env_repo),
        "FEATURESTORE_REGISTRY_URL": "postgresql://env/db",
        "FEATURESTORE_REDIS_URL": "redis://env:6379/0",
    }
    extra = {"repo_path": str(conn_repo), "registry_url": "postgresql://conn/db"}

    only_env = resolve_config(None, None, environ)
    assert (only_env.repo_path, only_env.registry_url) == (env_repo, "postgresql://env/db")
    assert only_env.sqlalchemy_url == "postgresql+psycopg://env/db"

    with_conn = resolve_config({"repo_path": "", "redis_url": None}, extra, environ)
    assert with_conn.repo_path == conn_repo
    assert with_conn.registry_url == "postgresql://conn/db"
    assert with_conn.redis_url == "redis://env:6379/0"

    with_param = resolve_config({"repo_path": str(param_repo)}, extra, environ)
    assert with_param.repo_path == param_repo


def test_registry_defaults_to_the_repos_sqlite_file_and_env_is_restored(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "r")
    config = resolve_config({"repo_path": str(repo)}, None, {})
    assert config.registry_url == f"sqlite:///{repo / 'data' / 'registry.db'}"
    assert config.redis_url is None
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEATURESTORE_REGISTRY_URL", "sqlite:///before.db")
        with store_environment(config):
            import os

            assert os.environ["FEATURESTORE_REGISTRY_URL"] == config.registry_url
        assert os.environ["FEATURESTORE_REGISTRY_URL"] == "sqlite:///before.db"


def test_missing_or_wrong_repo_is_refused_with_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="FEATURESTORE_REPO_PATH"):
        resolve_config(None, None, {})
    with pytest.raises(InvalidRequestError, match=r"no feature_store\.yaml"):
        resolve_config({"repo_path": str(tmp_path)}, None, {})
