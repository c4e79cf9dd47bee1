"""API key storage: hashed, scoped, revocable, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from foundation.errors import AuthenticationError, NotFoundError
from service.auth import ApiKey, KeyStore, Scope, upgrade

BIN = Path(sys.executable).parent
PROJECT = "rides"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    eng = sa.create_engine(url)
    upgrade(eng)
    yield eng
    with eng.begin() as conn:
        conn.execute(sa.delete(ApiKey.__table__))
    eng.dispose()


def test_created_key_verifies_with_its_scope(engine: sa.Engine) -> None:
    store = KeyStore(engine, project=PROJECT)
    for scope in Scope:
        assert store.verify(store.create(scope)) is scope


def test_only_a_hash_of_the_secret_is_stored(engine: sa.Engine) -> None:
    key = KeyStore(engine, project=PROJECT).create(Scope.ADMIN, name="ops")
    secret = key.split("_", 2)[2]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(ApiKey.__table__)).mappings().all()
    assert len(rows) == 1
    assert all(secret not in str(value) for value in rows[0].values())


def test_revoked_key_is_refused_even_when_cached(engine: sa.Engine) -> None:
    store = KeyStore(engine, project=PROJECT, cache_seconds=60)
    key = store.create(Scope.READ)
    assert store.verify(key) is Scope.READ
    store.revoke(key.split("_")[1])
    with pytest.raises(AuthenticationError):
        store.verify(key)


def test_revocation_in_another_process_takes_effect_after_the_cache_window(
    engine: sa.Engine,
) -> None:
    issuer, server = (
        KeyStore(engine, project=PROJECT),
        KeyStore(engine, project=PROJECT, cache_seconds=0),
    )
    key = issuer.create(Scope.WRITE)
    assert server.verify(key) is Scope.WRITE
    issuer.revoke(key.split("_")[1])
    with pytest.raises(AuthenticationError):
        server.verify(key)


@pytest.mark.parametrize("bad", ["", "Bearer", "fsk_", "fsk_abc", "xyz_abc_def", "fsk__secret"])
def test_malformed_keys_are_refused(engine: sa.Engine, bad: str) -> None:
    with pytest.raises(AuthenticationError):
        KeyStore(engine, project=PROJECT).verify(bad)


def test_wrong_secret_for_a_real_id_is_refused(engine: sa.Engine) -> None:
    store = KeyStore(engine, project=PROJECT)
    key = store.create(Scope.ADMIN)
    prefix, key_id, _ = key.split("_", 2)
    with pytest.raises(AuthenticationError):
        store.verify(f"{prefix}_{key_id}_not-the-secret")


def test_revoking_an_unknown_id_names_the_fix(engine: sa.Engine) -> None:
    with pytest.raises(NotFoundError, match="featurestore keys list"):
        KeyStore(engine, project=PROJECT).revoke("does-not-exist")


def test_migrations_are_idempotent(engine: sa.Engine) -> None:
    upgrade(engine)
    assert KeyStore(engine, project=PROJECT).list() == []


def test_scopes_are_ordered() -> None:
    assert Scope.ADMIN > Scope.WRITE > Scope.READ
    with pytest.raises(ValueError, match="read, write or admin"):
        Scope.parse("superuser")


def test_cli_prints_a_key_once_and_lists_without_secrets(tmp_path: Path) -> None:
    (tmp_path / "feature_store.yaml").write_text(f"project: {PROJECT}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTORE_")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "featurestore"), "keys", *args, "--repo", str(tmp_path)],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip

    created = run("create", "--scope", "write", "--name", "pusher")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("fsk_")
    listed = run("list")
    key_id = key.split("_")[1]
    assert f"{key_id}\twrite\tactive" in listed.stdout
    assert key.split("_", 2)[2] not in listed.stdout
    assert run("revoke", key_id).returncode == 0
    assert f"{key_id}\twrite\trevoked" in run("list").stdout
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'data' / 'registry.db'}")
    with pytest.raises(AuthenticationError):
        KeyStore(engine, project=PROJECT).verify(key)


def test_a_key_of_one_project_is_nobody_in_another(engine: sa.Engine) -> None:
    rides, other = KeyStore(engine, project=PROJECT), KeyStore(engine, project="other")
    key = rides.create(Scope.ADMIN, name="rides-admin")
    with pytest.raises(AuthenticationError, match="another project"):
        other.verify(key)
    assert other.list() == []
    with pytest.raises(NotFoundError, match="'other'"):
        other.revoke(key.split("_")[1])
    assert rides.verify(key) is Scope.ADMIN


def test_a_key_made_before_keys_had_a_project_is_refused(engine: sa.Engine) -> None:
    store = KeyStore(engine, project=PROJECT)
    key = store.create(Scope.ADMIN)
    with engine.begin() as conn:
        conn.execute(sa.update(ApiKey.__table__).values(project=None))
    with pytest.raises(AuthenticationError, match="featurestore keys create"):
        KeyStore(engine, project=PROJECT).verify(key)


def test_a_flood_of_made_up_keys_is_answered_without_database_reads(engine: sa.Engine) -> None:
    store = KeyStore(engine, project=PROJECT, cache_seconds=60)
    real = store.create(Scope.READ)
    assert store.verify(real) is Scope.READ
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    key_id = real.split("_")[1]
    for i in range(500):
        with pytest.raises(AuthenticationError):
            store.verify(f"fsk_{i:012x}_made-up-secret-{i}")
        with pytest.raises(AuthenticationError):
            store.verify(f"fsk_{key_id}_wrong-secret-{i}")
    # Made-up ids re-read the table at most once a second; wrong secrets never do.
    assert len(statements) <= 3
    assert store.verify(real) is Scope.READ


def test_a_new_key_works_at_once_on_a_server_with_a_fresh_snapshot(engine: sa.Engine) -> None:
    server = KeyStore(engine, project=PROJECT, cache_seconds=60)
    server.verify(server.create(Scope.READ))
    issued_elsewhere = KeyStore(engine, project=PROJECT).create(Scope.WRITE)
    deadline = time.monotonic() + 5
    while True:  # an unknown id re-reads the table after at most one second
        try:
            assert server.verify(issued_elsewhere) is Scope.WRITE
            break
        except AuthenticationError:
            assert time.monotonic() < deadline


def test_cli_without_a_repo_project_names_the_fix(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTORE_")}
    done = subprocess.run(
        [str(BIN / "featurestore"), "keys", "list", "--repo", str(tmp_path)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "--project" in done.stderr
