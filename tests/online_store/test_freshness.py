"""Freshness records: the newest event each view's materializations wrote, kept at its max.

The log runs on the registry database, so it is checked on SQLite and on PostgreSQL; the
engine test materializes real Parquet into real Redis and reads the record back.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from foundation.environment import sqlalchemy_url
from online_store.freshness import FreshnessLog
from tests.online_store.feast_repo import DUCKDB, RepoSpec, make_store, write_repo
from tests.online_store.views import T0, parquet_views


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        url = sqlalchemy_url(request.getfixturevalue("pg_url"))
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def project() -> str:
    # The PostgreSQL database lives for the session: each test writes its own project.
    return f"p{uuid.uuid4().hex[:8]}"


def test_record_keeps_the_newest_event_and_never_lowers_it(
    registry_engine: sa.Engine, project: str
) -> None:
    log = FreshnessLog(registry_engine, project)
    assert log.newest_events() == {}  # the table is created on first use
    log.record("stats", T0)
    log.record("stats", T0 - timedelta(days=3))  # an older backfill
    log.record("stats", T0.replace(tzinfo=None) + timedelta(seconds=1))  # naive is UTC
    log.record("other", T0 - timedelta(hours=1))
    FreshnessLog(registry_engine, "elsewhere").record("stats", T0 + timedelta(days=9))
    assert log.newest_events() == {
        "stats": T0 + timedelta(seconds=1),
        "other": T0 - timedelta(hours=1),
    }


def test_concurrent_first_records_of_a_view_keep_the_greatest(
    registry_engine: sa.Engine, project: str
) -> None:
    times = [T0 + timedelta(minutes=i) for i in range(8)]
    errors: list[BaseException] = []

    def record(t: datetime) -> None:
        try:
            FreshnessLog(registry_engine, project).record("stats", t)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(t,)) for t in times]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert FreshnessLog(registry_engine, project).newest_events() == {"stats": max(times)}


def test_forget_drops_only_the_named_views(registry_engine: sa.Engine, project: str) -> None:
    log = FreshnessLog(registry_engine, project)
    log.record("a", T0)
    log.record("b", T0)
    log.forget(["a", "not-recorded"])
    assert log.newest_events() == {"b": T0}


def _rows(path: Path, times: list[datetime]) -> Path:
    pq.write_table(
        pa.table(
            {
                "driver_id": pa.array(range(len(times)), pa.int64()),
                "a_x": [float(i) for i in range(len(times))],
                "b_x": [float(i) for i in range(len(times))],
                "event_ts": pa.array(times, pa.timestamp("us", tz="UTC")),
            }
        ),
        path,
    )
    return path


def test_materialize_records_the_newest_event_written_not_the_window_end(
    tmp_path: Path, redis_url: str
) -> None:
    parquet = _rows(tmp_path / "d.parquet", [T0 - timedelta(hours=5), T0, T0 - timedelta(days=1)])
    registry = tmp_path / "registry.db"
    spec = RepoSpec("p", redis_url, True, True, offline=DUCKDB, registry_path=registry)
    store = make_store(tmp_path / "repo", spec, lambda: parquet_views(parquet))
    # `feast apply` created the tables, so the first materialize does not migrate.
    tables = sa.inspect(sa.create_engine(f"sqlite:///{registry}"))
    assert tables.has_table("featurestore_view_freshness")
    assert tables.has_table("featurestore_statistics")
    store.materialize(T0 - timedelta(days=2), T0 + timedelta(days=30))
    log = FreshnessLog(sa.create_engine(f"sqlite:///{registry}"), "p")
    assert log.newest_events() == {"a": T0, "b": T0}
    # A later window with no rows, then an older one: the record stays at T0.
    store.materialize(T0 + timedelta(days=30), T0 + timedelta(days=31))
    store.materialize(T0 - timedelta(days=2), T0 - timedelta(hours=2))
    assert log.newest_events() == {"a": T0, "b": T0}
    # `feast apply` without view b forgets it, as its rows leave Redis.
    store.apply([], objects_to_delete=[store.get_feature_view("b")], partial=False)
    assert log.newest_events() == {"a": T0}


def test_materialize_with_a_file_registry_records_nothing_and_succeeds(
    tmp_path: Path, redis_url: str
) -> None:
    import yaml
    from feast import FeatureStore

    parquet = _rows(tmp_path / "d.parquet", [T0])
    repo = write_repo(tmp_path / "repo", RepoSpec("p", redis_url, True, True, offline=DUCKDB))
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    config["registry"] = str(tmp_path / "registry.pb")  # Feast's file registry
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config))
    store = FeatureStore(repo_path=str(repo))
    store.apply(parquet_views(parquet))
    store.materialize(T0 - timedelta(1), T0 + timedelta(1))
    assert store.get_online_features(["a:a_x"], [{"driver_id": 0}]).to_dict()["a_x"] == [0.0]
    assert not list(tmp_path.glob("*.db"))


def test_head_revision_constant_is_the_newest_migration() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from online_store import freshness

    config = Config()
    config.set_main_option("script_location", str(Path(freshness.__file__).with_name("migrations")))
    assert ScriptDirectory.from_config(config).get_heads() == [freshness.HEAD_REVISION]


def test_a_future_event_time_is_recorded_as_the_recording_time(tmp_path: Path) -> None:
    log = FreshnessLog(sa.create_engine(f"sqlite:///{tmp_path / 'f.db'}"), "p")
    log.record("v", datetime(9999, 12, 31, tzinfo=UTC))
    assert log.newest_events()["v"] <= datetime.now(UTC)
    log.record("v", datetime.now(UTC) + timedelta(seconds=1))  # still moves forward
    assert log.newest_events()["v"] > datetime.now(UTC) - timedelta(seconds=5)
