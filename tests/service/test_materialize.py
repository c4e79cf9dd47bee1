"""Materialization jobs: ids, progress, one job per view (409), failures reported."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
import redis

from tests.service.conftest import AppClient, Repo, columns


def _wait(app: AppClient, job_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = app.get(f"/materialize/{job_id}").json()
        if job["state"] in ("succeeded", "failed"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def _window(repo: Repo) -> dict[str, str]:
    return {
        "start_ts": (repo.end - timedelta(days=400)).isoformat(),
        "end_ts": (repo.end + timedelta(seconds=1)).isoformat(),
    }


@pytest.fixture
def fresh(app_factory: Any, redis_server_factory: Any) -> AppClient:
    """An app on an empty Redis, so a job's effect is visible."""
    server = redis_server_factory(persistent=False)
    app: AppClient = app_factory(redis_url=server.url)
    return app


def test_materialize_job_loads_redis_and_reports_progress(fresh: AppClient, repo: Repo) -> None:
    customer = sorted(repo.latest("customer_profile", ["customer_id"]))[0][0]
    read = {
        "entities": {"customer_id": [customer]},
        "features": ["customer_profile:membership_tier"],
    }
    before = columns(fresh.post("/get-online-features", json=read).json())
    assert before["membership_tier"]["statuses"] == ["NOT_FOUND"]

    resp = fresh.post("/materialize", json={**_window(repo), "feature_views": ["customer_profile"]})
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert job["status"] == "accepted"
    assert job["feature_views"] == ["customer_profile"]
    assert job["state"] in ("pending", "running")
    done = _wait(fresh, job["job_id"])
    assert done["state"] == "succeeded", done
    progress = done["progress"]["customer_profile"]
    assert progress["finished"] is True
    assert progress["rows_done"] > 0
    assert done["finished_at"] is not None
    after = columns(fresh.post("/get-online-features", json=read).json())
    assert after["membership_tier"]["statuses"] in (["PRESENT"], ["NULL_VALUE"])


def test_materialize_incremental_job_succeeds(fresh: AppClient, repo: Repo) -> None:
    resp = fresh.post(
        "/materialize-incremental",
        json={"end_ts": _window(repo)["end_ts"], "feature_views": ["driver_customer_stats"]},
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["kind"] == "materialize-incremental"
    assert _wait(fresh, resp.json()["job_id"])["state"] == "succeeded"


def test_second_job_for_a_busy_view_is_409_until_released(fresh: AppClient, repo: Repo) -> None:
    # Hold the view's lock the way a job on another worker process does.
    client = redis.Redis.from_url(fresh.state.redis_url)
    key = "featurestore:{rides}:materialize-lock:driver_hourly_stats"
    client.set(key, "otherworkerjob", px=30_000)
    body = {**_window(repo), "feature_views": ["customer_profile", "driver_hourly_stats"]}
    resp = fresh.post("/materialize", json=body)
    assert resp.status_code == 409
    error = resp.json()["error"]
    assert error["type"] == "conflict"
    assert error["feature_view"] == "driver_hourly_stats"
    assert error["job_id"] == "otherworkerjob"
    assert "GET /materialize/otherworkerjob" in error["message"]
    # Nothing was locked for the other view by the refused request.
    assert client.get("featurestore:{rides}:materialize-lock:customer_profile") is None
    client.delete(key)
    resp = fresh.post("/materialize", json=body)
    assert resp.status_code == 202
    assert _wait(fresh, resp.json()["job_id"])["state"] == "succeeded"
    assert client.get(key) is None  # released when the job ended
    client.close()


def test_running_job_blocks_a_second_one_for_the_same_view(fresh: AppClient, repo: Repo) -> None:
    store = fresh.state.store
    gate_open = False

    def slow_materialize(*args: Any, **kwargs: Any) -> None:
        while not gate_open:  # holds the job in "running" until the test has checked
            time.sleep(0.05)

    with mock.patch.object(store, "materialize", side_effect=slow_materialize):
        body = {**_window(repo), "feature_views": ["customer_profile"]}
        first = fresh.post("/materialize", json=body)
        assert first.status_code == 202
        second = fresh.post("/materialize", json=body)
        assert second.status_code == 409
        assert second.json()["error"]["job_id"] == first.json()["job_id"]
        assert fresh.get(f"/materialize/{first.json()['job_id']}").json()["state"] in (
            "pending",
            "running",
        )
        gate_open = True
        assert _wait(fresh, first.json()["job_id"])["state"] == "succeeded"
    assert fresh.post("/materialize", json=body).status_code == 202


def test_failed_job_reports_error_and_releases_the_view(fresh: AppClient, repo: Repo) -> None:
    body = {**_window(repo), "feature_views": ["customer_profile"]}
    with mock.patch.object(fresh.state.store, "materialize", side_effect=OSError("disk gone")):
        job = fresh.post("/materialize", json=body).json()
        done = _wait(fresh, job["job_id"])
    assert done["state"] == "failed"
    assert "disk gone" in done["error"]
    assert fresh.post("/materialize", json=body).status_code == 202


JAN = {"start_ts": "2026-01-01", "end_ts": "2026-01-02"}


@pytest.mark.parametrize(
    ("path", "body", "status", "error_type"),
    [
        ("/materialize", {"start_ts": "2026-01-02", "end_ts": "2026-01-01"}, 422,
         "invalid_timestamp"),
        ("/materialize", {"start_ts": "yesterday", "end_ts": "2026-01-01"}, 422,
         "invalid_timestamp"),
        ("/materialize", {"end_ts": "2026-01-01"}, 422, "invalid_timestamp"),
        ("/materialize", {**JAN, "feature_views": ["nope"]}, 404, "feature_view_not_found"),
        ("/materialize", {**JAN, "feature_views": []}, 422, "invalid_request"),
        ("/materialize-incremental", {"end_ts": "soon"}, 422, "invalid_timestamp"),
        ("/materialize-incremental", {}, 422, "validation_error"),
    ],
)  # fmt: skip
def test_bad_materialize_requests(
    client: AppClient, path: str, body: dict[str, Any], status: int, error_type: str
) -> None:
    resp = client.post(path, json=body)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["type"] == error_type


def test_unknown_job_is_404(client: AppClient) -> None:
    resp = client.get("/materialize/0123456789abcdef")
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "job_not_found"


def test_queued_job_keeps_its_lock_past_the_lock_ttl(
    app_factory: Any, redis_server_factory: Any, repo: Repo
) -> None:
    server = redis_server_factory(persistent=False)
    app: AppClient = app_factory(
        redis_url=server.url, materialize_max_jobs=1, materialize_lock_ttl_seconds=1
    )
    gate = threading.Event()

    def blocked(*args: Any, **kwargs: Any) -> None:
        gate.wait(60)  # holds the only job slot while the test checks the queue

    client = redis.Redis.from_url(server.url)
    lock = "featurestore:{rides}:materialize-lock:driver_hourly_stats"
    with mock.patch.object(app.state.store, "materialize", side_effect=blocked):
        running = app.post(
            "/materialize", json={**_window(repo), "feature_views": ["customer_profile"]}
        )
        body = {**_window(repo), "feature_views": ["driver_hourly_stats"]}
        queued = app.post("/materialize", json=body)
        assert (running.status_code, queued.status_code) == (202, 202)
        assert 0 < client.pttl(lock) <= 1000  # the short TTL is in force
        time.sleep(2.5)  # more than twice the lock TTL while the job waits for the slot
        assert app.get(f"/materialize/{queued.json()['job_id']}").json()["state"] == "pending"
        duplicate = app.post("/materialize", json=body)
        assert duplicate.status_code == 409, duplicate.text
        assert duplicate.json()["error"]["job_id"] == queued.json()["job_id"]
        gate.set()
        assert _wait(app, running.json()["job_id"])["state"] == "succeeded"
        assert _wait(app, queued.json()["job_id"])["state"] == "succeeded"
    assert client.get(lock) is None  # released at the end
    client.close()
