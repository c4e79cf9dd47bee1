"""API keys on the HTTP service: 401 without or with a bad key, 403 below the scope."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from service.app import create_app
from service.auth import KeyStore, Scope, open_key_engine
from service.settings import Settings
from tests.service.conftest import AppClient, Repo, make_settings

LOOKUP = {"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}}
PUSH = {
    "push_source_name": "driver_stats_push",
    "df": {"driver_id": [], "event_timestamp": [], "created": []},
    "to": "online",
}
WINDOW = {"start_ts": "2020-01-01T00:00:00Z", "end_ts": "2020-01-02T00:00:00Z"}


@pytest.fixture(scope="module")
def engine(repo: Repo) -> Iterator[sa.Engine]:
    eng = open_key_engine(repo.registry_url, 5)
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def keys(engine: sa.Engine) -> dict[str, str]:
    store = KeyStore(engine, project="rides")
    return {scope.name.lower(): store.create(scope, name=f"test-{scope.name}") for scope in Scope}


@pytest.fixture(scope="module")
def app(repo: Repo) -> Iterator[AppClient]:
    client = AppClient(create_app(make_settings(repo, auth=True, api_key_cache_seconds=0)))
    yield client
    client.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# (method, path, body, lowest scope that may call it)
ROUTES: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("POST", "/get-online-features", LOOKUP, "read"),
    ("GET", "/registry/feature-views", None, "read"),
    ("POST", "/push", PUSH, "write"),
    ("POST", "/materialize", {**WINDOW, "feature_views": ["driver_hourly_stats"]}, "admin"),
    ("GET", "/keys", None, "admin"),
    # an id no test writes: the admin call deletes nothing other tests read
    ("DELETE", "/online/driver_hourly_stats", {"entities": {"driver_id": [999_999]}}, "admin"),
]


@pytest.mark.parametrize(("method", "path", "body", "_"), ROUTES)
def test_no_key_is_401_with_a_bearer_challenge(
    app: AppClient, method: str, path: str, body: dict[str, Any] | None, _: str
) -> None:
    resp = app.request(method, path, json=body)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    error = resp.json()["error"]
    assert error["type"] == "unauthenticated"
    assert "featurestore keys create" in error["message"]


@pytest.mark.parametrize(
    "header", ["Bearer fsk_nope_nope", "Basic dXNlcjpwdw==", "Bearer", "fsk_x_y"]
)
def test_bad_key_is_401(app: AppClient, header: str) -> None:
    resp = app.post("/get-online-features", json=LOOKUP, headers={"Authorization": header})
    assert resp.status_code == 401
    assert resp.json()["error"]["type"] == "unauthenticated"


@pytest.mark.parametrize(("method", "path", "body", "needed"), ROUTES)
@pytest.mark.parametrize("scope", ["read", "write", "admin"])
def test_scopes_gate_routes(
    app: AppClient,
    keys: dict[str, str],
    method: str,
    path: str,
    body: dict[str, Any] | None,
    needed: str,
    scope: str,
) -> None:
    resp = app.request(method, path, json=body, headers=bearer(keys[scope]))
    allowed = Scope.parse(scope) >= Scope.parse(needed)
    if allowed:
        assert resp.status_code not in (401, 403), resp.text
        assert resp.status_code < 500, resp.text
    else:
        assert resp.status_code == 403
        error = resp.json()["error"]
        assert error["type"] == "permission_denied"
        assert error["required"] == needed
        assert f"--scope {needed}" in error["message"]


def test_lookup_with_a_read_key_returns_features(app: AppClient, keys: dict[str, str]) -> None:
    resp = app.post("/get-online-features", json=LOOKUP, headers=bearer(keys["read"]))
    assert resp.status_code == 200
    assert resp.json()["results"][1]["statuses"] == ["PRESENT"]


def test_operations_endpoints_need_no_key(app: AppClient) -> None:
    assert app.get("/health").status_code == 200
    assert app.get("/ready").status_code == 200
    assert app.get("/metrics").status_code == 200


def test_admin_creates_and_revokes_keys_over_http(app: AppClient, keys: dict[str, str]) -> None:
    created = app.post(
        "/keys", json={"scope": "read", "name": "via-http"}, headers=bearer(keys["admin"])
    )
    assert created.status_code == 201
    new_key = created.json()["key"]
    assert app.post("/get-online-features", json=LOOKUP, headers=bearer(new_key)).status_code == 200
    listed = app.get("/keys", headers=bearer(keys["admin"])).json()
    assert {"key_id": created.json()["key_id"], "scope": "read", "revoked": False}.items() <= next(
        k for k in listed if k["key_id"] == created.json()["key_id"]
    ).items()
    assert all("key" not in k and new_key not in str(k) for k in listed)
    revoked = app.request(
        "DELETE", f"/keys/{created.json()['key_id']}", headers=bearer(keys["admin"])
    )
    assert revoked.status_code == 204
    assert app.post("/get-online-features", json=LOOKUP, headers=bearer(new_key)).status_code == 401


def test_keys_never_reach_the_logs(
    app: AppClient, keys: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for key in (keys["read"], "fsk_deadbeef0000_not-a-real-secret"):
        app.post("/get-online-features", json=LOOKUP, headers=bearer(key))
        app.post("/push", json=PUSH, headers=bearer(key))
    secrets = [keys["read"].split("_", 2)[2], "not-a-real-secret"]
    assert caplog.records, "expected the service to log something at DEBUG"
    assert not any(secret in caplog.text for secret in secrets)


def test_openapi_declares_bearer_auth_when_on(app: AppClient) -> None:
    spec = app.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert spec["paths"]["/keys"]["post"]["security"] == [{"HTTPBearer": []}]


def test_public_bind_is_allowed_with_auth() -> None:
    assert Settings(host="0.0.0.0", auth=True).host == "0.0.0.0"
