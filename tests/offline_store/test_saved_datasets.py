"""Saved training datasets on SQLite and PostgreSQL registries, and the time split helper."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa
from feast import FeatureStore

from foundation.errors import ConflictError, InvalidRequestError, NotFoundError
from offline_store.datasets import DatasetCatalog, upgrade
from offline_store.saved import (
    fingerprint,
    get_saved_dataset,
    list_training_datasets,
    load_training_dataset,
    save_training_dataset,
)
from offline_store.sdk import get_training_dataset
from offline_store.split import time_split
from tests.offline_store.repo_helpers import DRIVER_SCHEMA, make_store, three_views, write_rows

T0 = datetime(2024, 9, 1, tzinfo=UTC)
ENTITIES = pd.DataFrame(
    {
        "driver_id": [1, 1, 2],
        "event_timestamp": [T0 + timedelta(hours=h) for h in (1, 3, 2)],
        "label": [0, 1, 0],
    }
)


def _store(root: Path, registry_url: str | None = None) -> FeatureStore:
    fs = make_store(root, three_views(ttl_driver=timedelta(days=1)))
    if registry_url is not None:
        text = (root / "feature_store.yaml").read_text()
        text = text.replace(f"sqlite:///{root}/registry.db", registry_url)
        (root / "feature_store.yaml").write_text(text)
        fs = FeatureStore(repo_path=str(root))
        fs.apply(three_views(ttl_driver=timedelta(days=1)))
    write_rows(
        root / "data" / "driver.parquet",
        DRIVER_SCHEMA,
        [{"driver_id": 1, "event_timestamp": T0, "created": T0, "rate": 0.5, "trips": 3}],
    )
    return fs


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> FeatureStore:
    if request.param == "sqlite":
        return _store(tmp_path)
    pg_url: str = request.getfixturevalue("pg_url")
    return _store(tmp_path, pg_url)


def test_save_list_get_and_reload_by_name_and_version(store: FeatureStore) -> None:
    first = save_training_dataset(
        ENTITIES, ["driver_fv:rate", "driver_fv:trips"], name="rides", store=store
    )
    second = save_training_dataset(ENTITIES.iloc[:2], ["driver_fv:rate"], name="rides", store=store)
    other = save_training_dataset(ENTITIES, ["driver_fv:rate"], name="other", store=store)

    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert first.features == ["driver_fv:rate", "driver_fv:trips"]
    assert first.row_count == 3
    assert second.row_count == 2
    assert first.min_event_timestamp == T0 + timedelta(hours=1)
    assert first.max_event_timestamp == T0 + timedelta(hours=3)
    assert first.entity_fingerprint == fingerprint(ENTITIES)
    assert first.entity_fingerprint != second.entity_fingerprint
    assert first.entity_fingerprint == other.entity_fingerprint
    assert first.created_at.tzinfo is not None
    assert Path(first.storage_path).exists()

    assert [(d.name, d.version) for d in list_training_datasets(store=store)] == [
        ("other", 1),
        ("rides", 1),
        ("rides", 2),
    ]
    assert [d.version for d in list_training_datasets("rides", store=store)] == [1, 2]
    assert get_saved_dataset("rides", store=store) == second
    assert get_saved_dataset("rides", 1, store=store) == first

    reloaded = load_training_dataset("rides", 1, store=store)
    assert isinstance(reloaded, pd.DataFrame)
    assert reloaded["label"].tolist() == [0, 1, 0]
    assert reloaded["rate"].tolist()[:2] == [0.5, 0.5]
    # The rows and the types the SDK gives for the same request (nanosecond timestamps).
    built = get_training_dataset(ENTITIES, ["driver_fv:rate", "driver_fv:trips"], store=store)
    pd.testing.assert_frame_equal(reloaded, built)
    assert load_training_dataset("rides", 1, store=store, output="parquet") == first.storage_path


def test_a_reloaded_dataset_keeps_nullable_entity_dtypes_and_exact_ids(tmp_path: Path) -> None:
    fs = _store(tmp_path)
    entities = ENTITIES.assign(
        driver_id=pd.array([1, None, 2**53 + 1], dtype="Int64"),
        label=pd.array([True, None, False], dtype="boolean"),
    )
    built = get_training_dataset(entities, ["driver_fv:rate"], store=fs)
    assert built["driver_id"].dtype == "Int64"
    saved = save_training_dataset(entities, ["driver_fv:rate"], name="nullable", store=fs)
    reloaded = load_training_dataset("nullable", store=fs)
    assert isinstance(reloaded, pd.DataFrame)
    # Was float64 and object: the id 2**53 + 1 came back as 2**53.
    pd.testing.assert_frame_equal(reloaded, built)
    assert reloaded["driver_id"].tolist()[2] == 2**53 + 1
    assert pd.read_parquet(saved.storage_path)["label"].dtype == "boolean"


def test_unknown_versions_and_duplicate_versions_are_refused(store: FeatureStore) -> None:
    save_training_dataset(ENTITIES, ["driver_fv:rate"], name="rides", store=store)
    with pytest.raises(NotFoundError, match="version 7"):
        get_saved_dataset("rides", 7, store=store)
    with pytest.raises(NotFoundError, match="ghost"):
        load_training_dataset("ghost", store=store)
    with pytest.raises(ConflictError):
        save_training_dataset(ENTITIES, ["driver_fv:rate"], name="rides", store=store, version=1)


def test_migrations_are_idempotent_and_leave_other_alembic_tables_alone(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/r.db")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('someone_else')"))
    upgrade(engine)
    upgrade(engine)
    tables = set(sa.inspect(engine).get_table_names())
    assert {"fs_training_datasets", "fs_offline_alembic_version"} <= tables
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == (
            "someone_else"
        )
    assert DatasetCatalog(engine, "p").list() == []


def test_fingerprint_of_parquet_paths_and_sql(tmp_path: Path) -> None:
    ENTITIES.to_parquet(tmp_path / "e.parquet")
    same = fingerprint(str(tmp_path / "e.parquet"))
    assert same == fingerprint(str(tmp_path / "e.parquet"))
    ENTITIES.iloc[:1].to_parquet(tmp_path / "e.parquet")
    assert fingerprint(str(tmp_path / "e.parquet")) != same
    assert fingerprint("SELECT 1") == fingerprint("SELECT   1")


def test_fingerprint_of_a_folder_hashes_the_files_the_join_reads(tmp_path: Path) -> None:
    folder = tmp_path / "entities"
    folder.mkdir()
    ENTITIES.iloc[:2].to_parquet(folder / "part-2.parquet")
    ENTITIES.iloc[2:].to_parquet(folder / "part-10.parquet")
    before = fingerprint(str(folder))
    # Neither is read by the join: a notebook's checkpoint copy, and a link back up (which
    # a recursive glob followed level after level).
    (folder / ".ipynb_checkpoints").mkdir()
    ENTITIES.to_parquet(folder / ".ipynb_checkpoints" / "part-2.parquet")
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    assert fingerprint(str(folder)) == before
    ENTITIES.iloc[:1].to_parquet(folder / "part-3.parquet")
    assert fingerprint(str(folder)) != before


def test_time_split_keeps_later_rows_out_of_training() -> None:
    times = [T0 + timedelta(minutes=m) for m in (5, 1, 9, 3, 3, 7, 0, 8, 2, 6)]
    frame = pd.DataFrame({"event_timestamp": times, "row": range(10)})
    split = time_split(frame, fractions=(0.6, 0.2, 0.2))
    assert len(split.train) + len(split.validation) + len(split.test) == 10
    assert split.train["event_timestamp"].max() < split.validation["event_timestamp"].min()
    assert split.validation["event_timestamp"].max() < split.test["event_timestamp"].min()
    assert (len(split.train), len(split.validation), len(split.test)) == (6, 2, 2)
    # Original order is kept inside each part.
    assert split.train["row"].tolist() == sorted(split.train["row"].tolist())

    table = pa.Table.from_pandas(frame, preserve_index=False)
    explicit = time_split(
        table,
        train_until=datetime(2024, 9, 1, 0, 3),  # naive = UTC
        validation_until=T0 + timedelta(minutes=6),
    )
    assert explicit.train["row"].to_pylist() == [1, 6, 8]
    assert explicit.validation["row"].to_pylist() == [0, 3, 4]
    assert explicit.test["row"].to_pylist() == [2, 5, 7, 9]


def test_time_split_compares_nanosecond_times_exactly() -> None:
    base = pd.Timestamp("2024-01-01", tz="UTC")
    times = [base + pd.Timedelta(n, "ns") for n in (1, 2, 2, 3)] + [base + pd.Timedelta(1, "D")]
    frame = pd.DataFrame({"event_timestamp": times, "x": range(5)})
    for data in (
        frame,
        frame.assign(event_timestamp=frame["event_timestamp"].dt.tz_localize(None)),
    ):
        # Was: ArrowInvalid, casting to microseconds would lose data.
        parts = time_split(data, fractions=(0.2, 0.6, 0.2))
        assert [parts.train["x"].tolist(), parts.validation["x"].tolist()] == [[0], [1, 2, 3]]
        assert parts.test["x"].tolist() == [4]
        assert parts.train_until == base + pd.Timedelta(2, "ns")
    explicit = time_split(
        frame,
        train_until=datetime(2024, 1, 1, tzinfo=UTC),
        validation_until=base + pd.Timedelta(3, "ns"),
    )
    assert [len(explicit.train), len(explicit.validation), len(explicit.test)] == [0, 3, 2]


def test_time_split_rejects_bad_arguments() -> None:
    frame = pd.DataFrame({"event_timestamp": [T0], "x": [1]})
    with pytest.raises(InvalidRequestError):
        time_split(frame, fractions=(0.5, 0.6, 0.1))
    with pytest.raises(InvalidRequestError):
        time_split(frame, train_until=T0, validation_until=T0 - timedelta(days=1))
