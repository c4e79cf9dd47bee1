"""Statistics are recorded where the data flows: materialize, an offline window, a saved dataset.

Each stored run is checked against pandas over the same rows, on a real SQLite or PostgreSQL
registry and a real Redis.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from feast import FeatureStore

from foundation.errors import InvalidRequestError
from foundation.stats_log import FEATURE_VIEW, TRAINING_DATASET, StatisticsLog
from offline_store.saved import save_training_dataset
from offline_store.statistics import profile_window
from tests.online_store.feast_repo import DUCKDB, RepoSpec, make_store
from tests.online_store.views import T0, parquet_views


def _source(path: Path, rows: int = 3_000) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    a = rng.normal(3.0, 2.0, rows)
    a[rng.random(rows) < 0.2] = np.nan
    frame = pd.DataFrame(
        {
            "driver_id": rng.integers(0, 500, rows),
            "a_x": a,
            "b_x": rng.integers(0, 4, rows).astype(float),
            "event_ts": [T0 - timedelta(minutes=int(m)) for m in rng.integers(0, 5_000, rows)],
        }
    )
    frame["event_ts"] = pd.to_datetime(frame["event_ts"], utc=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return frame


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    if request.param == "sqlite":
        return tmp_path / "registry.db"
    return str(request.getfixturevalue("pg_url")).replace("postgresql://", "postgresql+psycopg://")


def _store(
    tmp_path: Path, redis_url: str, registry: Path | str
) -> tuple[FeatureStore, pd.DataFrame]:
    frame = _source(tmp_path / "d.parquet")
    spec = RepoSpec("p", redis_url, True, True, offline=DUCKDB, registry_path=None)
    store = make_store(tmp_path / "repo", spec, lambda: [])
    if isinstance(registry, str):
        text = (tmp_path / "repo" / "feature_store.yaml").read_text()
        text = text.replace(f"sqlite:///{tmp_path / 'repo' / 'registry.db'}", registry)
        (tmp_path / "repo" / "feature_store.yaml").write_text(text)
        store = FeatureStore(repo_path=str(tmp_path / "repo"))
    store.apply(parquet_views(tmp_path / "d.parquet"))
    return store, frame


def _log(store: FeatureStore) -> StatisticsLog:
    return StatisticsLog(sa.create_engine(str(store.config.registry.path)), "p")


def test_materialize_records_statistics_of_the_rows_it_wrote(
    tmp_path: Path, redis_url: str, registry: Path | str
) -> None:
    store, frame = _store(tmp_path, redis_url, registry)
    start, end = T0 - timedelta(days=10), T0 + timedelta(minutes=1)
    store.materialize(start, end)
    # What the engine writes: the latest row per entity in the window.
    latest = frame.sort_values("event_ts").groupby("driver_id").tail(1)
    run = _log(store).runs(FEATURE_VIEW, "a")[0]
    assert run.source == "materialize"
    assert run.row_count == len(latest)
    (a_x,) = run.columns
    assert a_x.name == "a_x"
    assert a_x.nulls == int(latest["a_x"].isna().sum())
    assert a_x.mean == pytest.approx(latest["a_x"].mean(), rel=1e-12)
    assert a_x.std == pytest.approx(latest["a_x"].std(), rel=1e-12)
    assert a_x.min == latest["a_x"].min()
    assert sum(b.count for b in a_x.histogram) == len(latest) - a_x.nulls
    # A second run is a second point of the time series, newest first.
    store.materialize(start, end)
    assert len(_log(store).runs(FEATURE_VIEW, "a")) == 2
    # `feast apply` removing a view drops its runs with it.
    store.apply([], objects_to_delete=[store.get_feature_view("b")], partial=False)
    assert _log(store).runs(FEATURE_VIEW, "b") == []


def test_profile_window_covers_every_row_of_the_window(tmp_path: Path, redis_url: str) -> None:
    store, frame = _store(tmp_path, redis_url, tmp_path / "registry.db")
    start, end = T0 - timedelta(hours=30), T0 - timedelta(hours=10)
    run = profile_window(store, "b", start, end)
    rows = frame[(frame["event_ts"] >= start) & (frame["event_ts"] < end)]
    assert run.row_count == len(rows)
    (b_x,) = run.columns
    assert b_x.mean == pytest.approx(rows["b_x"].mean(), rel=1e-12)
    assert [(b.lower, b.count) for b in b_x.histogram] == [
        (float(v), int(c)) for v, c in rows["b_x"].value_counts().sort_index().items()
    ]
    assert _log(store).runs(FEATURE_VIEW, "b")[0].run_id == run.run_id
    with pytest.raises(InvalidRequestError, match="not after its start"):
        profile_window(store, "b", end, start)


def test_saving_a_dataset_records_statistics_per_column_and_per_split(
    tmp_path: Path, redis_url: str
) -> None:
    store, _ = _store(tmp_path, redis_url, tmp_path / "registry.db")
    entities = pd.DataFrame(
        {
            "driver_id": np.arange(400) % 500,
            "event_timestamp": [T0 - timedelta(minutes=7 * i) for i in range(400)],
        }
    )
    saved = save_training_dataset(entities, ["a:a_x", "b:b_x"], name="ds", store=store)
    rows = pd.read_parquet(saved.storage_path)
    runs = {r.split: r for r in _log(store).runs(TRAINING_DATASET, "ds", subject_version=1)}
    assert set(runs) == {"all", "train", "validation", "test"}
    whole = {c.name: c for c in runs["all"].columns}
    assert set(whole) == {"a_x", "b_x"}
    assert whole["a_x"].completeness == rows["a_x"].notna().mean()
    assert whole["a_x"].mean == pytest.approx(rows["a_x"].mean(), rel=1e-12)
    assert sum(runs[s].row_count for s in ("train", "validation", "test")) == len(rows)
    # Training rows are the earliest 80 %: their mean is pandas' over those rows.
    cut = rows["event_timestamp"].sort_values().iloc[round(0.8 * len(rows))]
    train = rows[rows["event_timestamp"] < cut]
    train_a = {c.name: c for c in runs["train"].columns}["a_x"]
    assert runs["train"].row_count == len(train)
    assert train_a.mean == pytest.approx(train["a_x"].mean(), rel=1e-12)
