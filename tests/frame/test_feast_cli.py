"""`feast apply` / `feast materialize` from the example repo, for real, on both set-ups:
the embedded defaults (SQLite registry + embedded redis-server) and PostgreSQL + the
machine's running Redis."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import redis
from feast import FeatureStore

from foundation import environment
from online_store.embedded import EmbeddedRedis
from tests.frame.conftest import BIN

SHARED_REDIS = "redis://127.0.0.1:6379/15"


def _feast(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / "feast"), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, (
        f"feast {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    )
    return result


def _materialize_all(repo: Path, env: dict[str, str]) -> None:
    end = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S")
    _feast(repo, env, "materialize", "2000-01-01T00:00:00", end)


def _clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTORE_")}
    env.update(values)
    return env


def _latest(repo: Path, source: str, keys: list[str]) -> pd.DataFrame:
    frame = pd.read_parquet(repo / "data" / f"{source}.parquet")
    frame = frame.sort_values(["event_timestamp", "created"])
    return frame.groupby(keys, as_index=False).tail(1).set_index(keys)


def _assert_registry_round_trip(store: FeatureStore) -> None:
    assert {e.name for e in store.list_entities()} == {"driver", "customer"}
    views = {v.name: v for v in store.list_feature_views()}
    assert set(views) == {"driver_hourly_stats", "customer_profile", "driver_customer_stats"}
    assert views["driver_hourly_stats"].ttl == timedelta(days=1)
    assert views["customer_profile"].ttl == timedelta(0)
    assert sorted(views["driver_customer_stats"].join_keys) == ["customer_id", "driver_id"]
    assert [o.name for o in store.list_on_demand_feature_views()] == ["fare_estimate"]
    service = store.get_feature_service("ride_ranking_v1")
    assert {p.name for p in service.feature_view_projections} == {
        "driver_hourly_stats", "customer_profile", "driver_customer_stats", "fare_estimate",
    }  # fmt: skip
    assert "driver_stats_push" in {s.name for s in store.list_data_sources()}


def _assert_online_matches_parquet(repo: Path, store: FeatureStore) -> None:
    latest = _latest(repo, "customer_profile", ["customer_id"])
    ids = list(latest.index[:20])
    online = store.get_online_features(
        features=["customer_profile:lifetime_trip_count", "customer_profile:membership_tier"],
        entity_rows=[{"customer_id": i} for i in ids],
    ).to_dict()
    for i, customer in enumerate(ids):
        expected = latest.loc[customer]
        got_count = online["lifetime_trip_count"][i]
        if pd.isna(expected["lifetime_trip_count"]):
            assert got_count is None
        else:
            assert got_count == int(expected["lifetime_trip_count"])
        tier = expected["membership_tier"]
        assert online["membership_tier"][i] == (None if pd.isna(tier) else tier)


@pytest.fixture
def shared_redis() -> Iterator[str]:
    client = redis.Redis.from_url(SHARED_REDIS)
    client.flushdb()
    yield SHARED_REDIS
    client.flushdb()
    client.close()


def test_apply_and_materialize_on_postgres_and_running_redis(
    example_repo: Path, pg_url: str, shared_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _clean_env(FEATURESTORE_REGISTRY_URL=pg_url, FEATURESTORE_REDIS_URL=shared_redis)
    _feast(example_repo, env, "apply")
    _materialize_all(example_repo, env)

    for key, value in env.items():
        if key.startswith("FEATURESTORE_"):
            monkeypatch.setenv(key, value)
    store = FeatureStore(repo_path=str(example_repo))
    _assert_registry_round_trip(store)
    for view in store.list_feature_views():
        assert view.materialization_intervals, f"{view.name} has no recorded interval"
    _assert_online_matches_parquet(example_repo, store)
    assert redis.Redis.from_url(shared_redis).dbsize() > 0


def test_apply_and_materialize_on_embedded_defaults(
    example_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _clean_env()
    exports = subprocess.run(
        [str(BIN / "featurestore"), "env", "--repo", str(example_repo)],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert (
        f"FEATURESTORE_REGISTRY_URL='{environment.default_registry_url(example_repo)}'" in exports
    )
    script = (
        f'eval "{exports}" && feast apply'
        " && feast materialize 2000-01-01T00:00:00 2100-01-01T00:00:00"
    )
    result = subprocess.run(
        ["bash", "-c", script], cwd=example_repo, env={**env, "PATH": f"{BIN}:{env['PATH']}"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (example_repo / "data" / "registry.db").exists()

    # The plugin started a persistent redis-server for the command and stopped it on exit;
    # a new one on the same data directory sees everything that was written.
    redis_dir = example_repo / "data" / "redis"
    assert not (redis_dir / "server.json").exists()
    with EmbeddedRedis(redis_dir) as server:
        assert redis.Redis.from_url(server.url).dbsize() > 0
        monkeypatch.setenv(
            "FEATURESTORE_REGISTRY_URL", environment.default_registry_url(example_repo)
        )
        monkeypatch.setenv("FEATURESTORE_REDIS_URL", server.url)
        store = FeatureStore(repo_path=str(example_repo))
        _assert_registry_round_trip(store)
        _assert_online_matches_parquet(example_repo, store)


def test_registry_round_trip_on_sqlite_file_survives_a_new_store(
    example_repo: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _clean_env(
        FEATURESTORE_REGISTRY_URL=environment.default_registry_url(example_repo),
        FEATURESTORE_REDIS_URL=redis_url,
    )
    _feast(example_repo, env, "apply")
    for key, value in env.items():
        if key.startswith("FEATURESTORE_"):
            monkeypatch.setenv(key, value)
    _assert_registry_round_trip(FeatureStore(repo_path=str(example_repo)))
    # Removing a view from the definitions and applying again is reflected on reload.
    definitions = example_repo / "definitions.py"
    text = definitions.read_text().replace(
        "        driver_customer_stats,\n        fare_estimate,", "        fare_estimate,"
    )
    text = (
        text[: text.index("driver_customer_source = FileSource(")]
        + text[text.index("trip_request = RequestSource(") :]
    )
    definitions.write_text(text)
    _feast(example_repo, env, "apply")
    names = {v.name for v in FeatureStore(repo_path=str(example_repo)).list_feature_views()}
    assert names == {"driver_hourly_stats", "customer_profile"}
