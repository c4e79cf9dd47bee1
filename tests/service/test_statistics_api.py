"""The statistics, freshness and drift routes over the session repo (materialized by `feast`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from foundation.statistics import profile
from foundation.stats_log import FEATURE_VIEW, StatisticsLog
from offline_store.saved import save_training_dataset
from service.metrics import Metrics
from tests.service.conftest import AppClient, Repo


def _latest_frame(repo: Repo) -> pd.DataFrame:
    rows = repo.latest("driver_stats", ["driver_id"])
    return pd.DataFrame(list(rows.values()))


def test_materialize_statistics_are_served_and_equal_pandas(client: AppClient, repo: Repo) -> None:
    response = client.get("/statistics/feature-views/driver_hourly_stats?limit=500")
    assert response.status_code == 200
    runs = response.json()
    latest = _latest_frame(repo)
    # Other modules' pushes through the session app may have added `push` runs since.
    run = next(r for r in runs if r["source"] == "materialize")
    assert run["row_count"] == len(latest)
    columns = {c["name"]: c for c in run["columns"]}
    rating = columns["avg_rating"]
    assert rating["mean"] == pytest.approx(latest["avg_rating"].mean(), rel=1e-12)
    assert rating["std"] == pytest.approx(latest["avg_rating"].std(), rel=1e-12)
    assert rating["completeness"] == latest["avg_rating"].notna().mean()
    assert sum(b["count"] for b in rating["histogram"]) == rating["count"] - rating["nulls"]
    assert columns["is_active"]["kind"] == "string"  # booleans: top values
    assert {v for v, _ in columns["is_active"]["top"]} <= {"true", "false"}


def test_freshness_lists_every_view_with_its_last_run(client: AppClient, repo: Repo) -> None:
    rows = {r["feature_view"]: r for r in client.get("/statistics/freshness").json()}
    # Other modules may apply more views to the session repo: every one is listed.
    views = {v["name"] for v in client.get("/registry/feature-views").json()}
    assert set(rows) == views
    assert {"driver_hourly_stats", "customer_profile", "driver_customer_stats"} <= views
    driver = rows["driver_hourly_stats"]
    assert driver["ttl_seconds"] == 86_400
    assert driver["status"] == "fresh"  # data ends an hour ago, TTL one day
    assert driver["last_rows"] == len(_latest_frame(repo))
    assert rows["customer_profile"]["ttl_seconds"] == 0


def test_unknown_names_are_404_with_the_fix(client: AppClient) -> None:
    response = client.get("/statistics/feature-views/nope")
    assert response.status_code == 404
    assert "feast apply" in response.json()["error"]["message"]
    response = client.get("/statistics/drift/no_such_dataset")
    assert response.status_code == 404
    assert "no_such_dataset" in response.json()["error"]["message"]
    assert client.get("/statistics/feature-views/x?limit=0").status_code == 422


def test_registry_lists_projects_and_data_sources_with_where_used(client: AppClient) -> None:
    (project,) = client.get("/registry/projects").json()
    assert project["name"] == "rides"
    assert project["feature_views"] == len(client.get("/registry/feature-views").json()) >= 3
    sources = {s["name"]: s for s in client.get("/registry/data-sources").json()}
    # (other modules may add views on the same source to the session repo)
    assert "driver_hourly_stats" in sources["driver_stats_source"]["used_by"]
    assert "customer_profile" not in sources["driver_stats_source"]["used_by"]
    assert sources["driver_stats_push"]["kind"] == "PushSource"
    assert project["data_sources"] == len(sources)


def test_statistics_routes_are_in_the_openapi_schema(client: AppClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/statistics/freshness",
        "/statistics/feature-views/{name}",
        "/statistics/training-datasets",
        "/statistics/training-datasets/{name}/versions/{version}",
        "/statistics/drift/{name}",
        "/statistics/feature-views/{name}/compute",
        "/registry/data-sources",
    ):
        assert path in paths


def _shifted_run(repo: Repo, shift: float) -> None:
    """Record a window of driver_hourly_stats whose avg_rating moved by ``shift``."""
    latest = _latest_frame(repo)
    rng = np.random.default_rng(5)
    table = pa.table(
        {"avg_rating": latest["avg_rating"].to_numpy() + shift + rng.normal(0, 0.01, len(latest))}
    )
    engine = sa.create_engine(repo.registry_url)
    StatisticsLog(engine, "rides").record(
        subject_kind=FEATURE_VIEW,
        subject_name="driver_hourly_stats",
        columns=profile(table),
        row_count=table.num_rows,
        source="window",
    )
    engine.dispose()


def test_drift_of_a_saved_dataset_is_flagged_and_exported(client: AppClient, repo: Repo) -> None:
    latest = _latest_frame(repo)
    entities = pd.DataFrame(
        {
            "driver_id": latest["driver_id"],
            # One timestamp: each row gets its driver's latest (materialized) values.
            "event_timestamp": [repo.end + timedelta(minutes=1)] * len(latest),
        }
    )
    saved = save_training_dataset(
        entities,
        ["driver_hourly_stats:avg_rating"],
        name="drift_demo",
        store=client.app.state.feature_store,
    )
    listed = client.get("/statistics/training-datasets").json()
    assert any(d["name"] == "drift_demo" and d["row_count"] == saved.row_count for d in listed)
    splits = client.get(f"/statistics/training-datasets/drift_demo/versions/{saved.version}")
    assert [r["split"] for r in splits.json()] == ["all", "train", "validation", "test"]

    # Against a window of the rows it was built from: stable. (All rows share one
    # timestamp, so the training split is empty and the whole set is the reference.)
    _shifted_run(repo, 0.0)
    body: dict[str, Any] = client.get("/statistics/drift/drift_demo").json()
    (feature,) = body["features"]
    assert feature["psi"] is not None
    assert feature["psi"] < body["threshold"]
    assert not body["drifted"]
    # The latest window's ratings moved up by two standard deviations: flagged.
    _shifted_run(repo, 2 * float(latest["avg_rating"].std()))
    body = client.get("/statistics/drift/drift_demo").json()
    assert body["drifted"]
    assert body["features"][0]["psi"] > 0.25
    metrics = client.get("/metrics").text
    gauge = 'featurestore_feature_drift_psi{feature="avg_rating",training_dataset="drift_demo"}'
    assert gauge in metrics
    # The background refresh sets the gauge without anyone asking for the drift.
    fresh = Metrics()
    assert client.app.state.insights.update_drift_gauge(fresh) >= 1
    assert gauge in fresh.render().decode()


def test_pushed_rows_are_profiled_and_stored_as_one_run_per_window(app_factory: Any) -> None:
    # A window longer than the test: only the explicit flush below stores the run.
    client = app_factory(statistics_push_window_seconds=3600)
    when = (datetime.now(UTC) - timedelta(minutes=2)).isoformat()
    ratings = [4.0, 4.5, 5.0, None]
    for i, rating in enumerate(ratings):  # four pushes, one window
        df: dict[str, list[Any]] = {
            "driver_id": [950_000 + i],
            "event_timestamp": [when],
            "created": [when],
            "conv_rate": [0.5],
            "acc_rate": [0.5],
            "avg_daily_trips": [3],
            "avg_rating": [rating],
            "surge_multiplier": [1.0],
            "is_active": [True],
        }
        response = client.post("/push", json={"push_source_name": "driver_stats_push", "df": df})
        assert response.status_code == 200, response.text
    (run,) = client.app.state.insights.pushes.flush()
    assert run.source == "push"
    assert run.row_count == 4
    rating_stats = next(c for c in run.columns if c.name == "avg_rating")
    assert rating_stats.nulls == 1
    assert rating_stats.mean == pytest.approx(4.5)
    served = client.get("/statistics/feature-views/driver_hourly_stats").json()[0]
    assert (served["source"], served["run_id"]) == ("push", run.run_id)
    assert client.app.state.insights.pushes.flush() == []  # nothing new since


def test_compute_profiles_an_offline_window_on_demand(app_factory: Any, repo: Repo) -> None:
    client = app_factory()
    start, end = repo.end - timedelta(days=2), repo.end - timedelta(days=1)
    response = client.post(
        "/statistics/feature-views/driver_customer_stats/compute",
        json={"start": start.isoformat(), "end": end.isoformat()},
    )
    assert response.status_code == 200, response.text
    frame = repo.table("driver_customer_stats").to_pandas()
    rows = frame[(frame["event_timestamp"] >= start) & (frame["event_timestamp"] < end)]
    run = response.json()
    assert (run["source"], run["row_count"]) == ("window", len(rows))
    tip = next(c for c in run["columns"] if c["name"] == "avg_tip")
    assert tip["mean"] == pytest.approx(rows["avg_tip"].mean(), rel=1e-12)
    reversed_window = client.post(
        "/statistics/feature-views/driver_customer_stats/compute",
        json={"start": end.isoformat(), "end": start.isoformat()},
    )
    assert reversed_window.status_code == 422
    assert "not after its start" in reversed_window.json()["error"]["message"]
    unknown = client.post(
        "/statistics/feature-views/nope/compute",
        json={"start": start.isoformat(), "end": end.isoformat()},
    )
    assert unknown.status_code == 404
