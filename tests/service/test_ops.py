"""Health, readiness, metrics, OpenAPI, registry browsing and refresh, settings guard."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.compute as pc
import pytest
from feast import FeatureStore, FeatureView, Field
from feast.types import Float64
from pydantic import ValidationError

from service.auth import KeyStore, Scope, open_key_engine
from service.settings import Settings
from tests.service.conftest import AppClient, Repo, columns


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(r"^([^{\s]+)(\{[^}]*\})?\s+(\S+)$", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return 0.0


def test_health_and_ready(client: AppClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    resp = client.get("/ready")
    assert resp.status_code == 200
    assert resp.json()["redis"] == "ok"
    assert resp.json()["registry"] == "ok"


def test_ready_is_503_when_redis_is_down(app_factory: Any, redis_server_factory: Any) -> None:
    server = redis_server_factory(persistent=False)
    app = app_factory(redis_url=server.url, redis_timeout_seconds=0.5)
    assert app.get("/ready").status_code == 200
    server.kill()
    resp = app.get("/ready")
    assert resp.status_code == 503
    error = resp.json()["error"]
    assert error["type"] == "backend_unavailable"
    assert error["redis"].startswith("unreachable")
    assert error["registry"] == "ok"
    assert app.get("/health").status_code == 200  # liveness does not depend on backends


def test_ready_is_503_when_registry_is_unreachable(app_factory: Any, tmp_path: Any) -> None:
    app = app_factory(registry_url=f"sqlite:///{tmp_path}/missing/dir/registry.db")
    resp = app.get("/ready")
    assert resp.status_code == 503
    assert resp.json()["error"]["registry"].startswith("unreachable")
    # No snapshot: lookups say why instead of failing obscurely.
    resp = app.post(
        "/get-online-features",
        json={"entities": {"driver_id": [1]}, "features": ["driver_hourly_stats:conv_rate"]},
    )
    assert resp.status_code == 503
    assert "registry" in resp.json()["error"]["message"]


def test_metrics_count_requests_latency_redis_registry_and_freshness(
    client: AppClient, repo: Repo, app_factory: Any
) -> None:
    route = "/get-online-features"
    before = client.get("/metrics").text
    body = {"entities": {"driver_id": [1]}, "features": ["driver_hourly_stats:conv_rate"]}
    for _ in range(3):
        assert client.post(route, json=body).status_code == 200
    assert client.post(route, json={**body, "features": ["x:y"]}).status_code == 404
    text = client.get("/metrics").text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")

    def delta(name: str, **labels: str) -> float:
        return _metric(text, name, **labels) - _metric(before, name, **labels)

    ok = {"route": route, "method": "POST", "status": "200"}
    assert delta("featurestore_http_requests_total", **ok) == 3
    assert delta("featurestore_http_requests_total", route=route, method="POST", status="404") == 1
    assert delta("featurestore_http_request_duration_seconds_count", **ok) == 3
    assert delta("featurestore_http_request_duration_seconds_bucket", **ok, le="+Inf") == 3
    assert delta("featurestore_redis_call_duration_seconds_count", operation="read") == 3
    assert 0 <= _metric(text, "featurestore_registry_age_seconds") < 30
    # Freshness is now minus the newest event materialized, not the end of the window. Read
    # from an app that has pushed nothing: the shared client's gauge also counts the rows other
    # tests pushed through it (fresher than the materialized data).
    unpushed = app_factory().get("/metrics").text
    for view, table in [
        ("customer_profile", "customer_profile"),
        ("driver_hourly_stats", "driver_stats"),
    ]:
        newest = pc.max(repo.table(table).column("event_timestamp")).as_py()
        expected = (datetime.now(UTC) - newest).total_seconds()
        freshness = _metric(
            unpushed, "featurestore_feature_view_freshness_seconds", feature_view=view
        )
        assert expected - 30 < freshness <= expected + 1, view


def test_openapi_documents_every_endpoint_with_examples(client: AppClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in [
        "/get-online-features",
        "/push",
        "/write-to-online-store",
        "/materialize",
        "/materialize-incremental",
        "/materialize/{job_id}",
        "/health",
        "/ready",
        "/metrics",
        "/registry/entities",
        "/registry/feature-views/{name}",
        "/registry/feature-services",
    ]:
        assert path in paths, path
    online = paths["/get-online-features"]["post"]
    schema = online["requestBody"]["content"]["application/json"]["schema"]
    assert schema["examples"][0]["features"]
    assert "404" in online["responses"]
    assert "422" in online["responses"]
    components = spec["components"]["schemas"]
    for model in [
        "PushRequest", "WriteToOnlineStoreRequest", "WriteResponse", "MaterializeRequest",
        "MaterializeIncrementalRequest", "MaterializeJob", "ErrorResponse", "ReadyResponse",
        "EntityOut", "FeatureViewOut", "OnDemandFeatureViewOut", "FeatureServiceOut",
    ]:  # fmt: skip
        assert components[model]["examples"], model


def test_registry_browsing(client: AppClient) -> None:
    entities = client.get("/registry/entities").json()
    assert {(e["name"], e["join_key"]) for e in entities} >= {
        ("driver", "driver_id"),
        ("customer", "customer_id"),
    }
    view = client.get("/registry/feature-views/driver_customer_stats").json()
    assert view["ttl_seconds"] == 30 * 86400
    assert [c["name"] for c in view["join_keys"]] == ["driver_id", "customer_id"]
    assert {"name": "avg_tip", "dtype": "Float64"} in view["features"]
    assert view["tags"] == {"team": "matching"}
    assert view["materialized_intervals"], "the session repo was materialized"
    assert client.get("/registry/feature-views/customer_profile").json()["ttl_seconds"] == 0
    assert client.get("/registry/feature-views/nope").status_code == 404
    odfv = client.get("/registry/on-demand-feature-views/fare_estimate").json()
    assert {c["name"] for c in odfv["request_schema"]} == {"distance_km", "duration_min"}
    service = client.get("/registry/feature-services/ride_ranking_v1").json()
    assert service["tags"]["model"] == "ride_ranking"
    assert "fare_estimate" in [p["feature_view"] for p in service["features"]]
    assert client.get("/registry/feature-services/nope").json()["error"]["type"] == (
        "feature_service_not_found"
    )


def test_feast_apply_shows_up_without_restart(
    client: AppClient, repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEATURESTORE_REGISTRY_URL", repo.registry_url)
    store = FeatureStore(repo_path=str(repo.path))
    base = store.get_feature_view("driver_hourly_stats")
    new_view = FeatureView(
        name="driver_extra_stats",
        entities=[store.get_entity("driver")],
        ttl=timedelta(hours=2),
        schema=[Field(name="avg_rating", dtype=Float64)],
        source=base.batch_source,
        online=True,
    )
    store.apply([new_view])
    deadline = time.monotonic() + 10
    while client.get("/registry/feature-views/driver_extra_stats").status_code != 200:
        assert time.monotonic() < deadline, "the new view never appeared"
        time.sleep(0.2)
    resp = client.post(
        "/get-online-features",
        json={"entities": {"driver_id": [1]}, "features": ["driver_extra_stats:avg_rating"]},
    )
    assert resp.status_code == 200, resp.text
    assert columns(resp.json())["avg_rating"]["statuses"] == ["NOT_FOUND"]


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.com", "::"])
def test_settings_refuse_public_host_without_insecure(host: str) -> None:
    with pytest.raises(ValidationError, match="--insecure"):
        Settings(host=host)
    assert Settings(host=host, insecure=True).host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_settings_accept_loopback(host: str) -> None:
    assert Settings(host=host).host == host


def test_settings_read_env_and_guard_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURESTORE_REGISTRY_REFRESH_SECONDS", "3")
    monkeypatch.setenv("FEATURESTORE_WORKERS", "4")
    settings = Settings()
    assert settings.registry_refresh_seconds == 3
    assert settings.workers == 4
    with pytest.raises(ValidationError, match="less than or equal to 10"):
        Settings(registry_refresh_seconds=60)
    with pytest.raises(ValidationError, match="FEATURESTORE_REDIS_URL"):
        Settings(environment="production")


def test_ready_tells_strangers_only_up_or_down(
    app_factory: Any, redis_server_factory: Any, repo: Repo
) -> None:
    engine = open_key_engine(repo.registry_url, 5)
    key = KeyStore(engine, project="rides").create(Scope.READ, name="ready-test")
    engine.dispose()
    server = redis_server_factory(persistent=False)
    app = app_factory(redis_url=server.url, redis_timeout_seconds=0.5, auth=True)
    keyed = {"Authorization": f"Bearer {key}"}
    assert app.get("/ready").json() == {"status": "ready"}
    assert app.get("/ready", headers=keyed).json()["redis"] == "ok"
    server.kill()
    stranger = app.get("/ready")
    assert stranger.status_code == 503
    port = server.url.rsplit(":", 1)[1].split("/")[0]
    assert port not in stranger.text
    assert "redis" not in stranger.text.lower()
    assert stranger.json()["error"] == {
        "type": "backend_unavailable",
        "message": "not ready; retry shortly",
    }
    insider = app.get("/ready", headers=keyed)
    assert insider.status_code == 503
    assert insider.json()["error"]["redis"].startswith("unreachable")
