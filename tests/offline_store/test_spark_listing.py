"""The Spark store reads the files the DuckDB store reads, and breaks ties across them the same
way, whatever the source's layout: nested folders, ``**`` and one-level globs, hive partitions,
hidden names, file names Spark would take for globs, percent-encode or quote, and ``part-2`` against
``part-10`` (natural order)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from feast import FeatureView, Field, FileSource
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.types import Float64, String

from foundation.errors import InvalidRequestError
from offline_store.spark import SparkOfflineStore
from offline_store.store import DuckDBParquetOfflineStore
from tests.offline_store.repo_helpers import DRIVER
from tests.offline_store.test_spark_store import _spark_only_store, make_duck_twin

T0 = datetime(2024, 1, 1, tzinfo=UTC)
# (file, driver, hours after T0, rate): several files hold exact ties (same driver, event and
# created time), which the later file in natural order wins.
ROWS = [
    ("part-2.parquet", 1, 0, 0.1),
    ("part-10.parquet", 1, 0, 0.2),
    ("part-9.parquet", 1, 0, 0.3),
    ("2024/1/a.parquet", 1, 2, 0.4),
    ("2024/01/b.parquet", 2, 1, 0.5),
    ("2024/01/deep/c d.parquet", 2, 3, 0.6),
    ("x[1].parquet", 3, 0, 0.7),
    ("x1.parquet", 3, 0, 0.8),
    ("p%41+ü.parquet", 3, 0, 0.9),
    ("o'k\\.parquet", 3, 0, 1.0),
    # Not data: a notebook checkpoint and a job's scratch file, both "later" than the rest.
    (".ipynb_checkpoints/part-10-checkpoint.parquet", 1, 5, 9.1),
    ("_temporary/0/part-11.parquet", 2, 5, 9.2),
]
LAYOUTS = {
    "directory": ("data", None),
    "recursive glob": ("data/**/*.parquet", None),
    "one-level glob": ("data/2024/*/*.parquet", None),
    "flat glob": ("data/*.parquet", None),
    "hive partitions": ("hive", "region"),
}


def _write(root: Path) -> None:
    for name, driver, hours, rate in ROWS:
        for base, folder in (("data", ""), ("hive", f"region=r{driver}/")):
            path = root / base / f"{folder}{name}"
            path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(
                {
                    "driver_id": [driver],
                    "event_timestamp": [T0 + timedelta(hours=hours)],
                    "created": [T0],
                    "rate": [rate],
                }
            ).to_parquet(path)


def _objects(path: str, partition: str | None, spark_source: bool = False) -> list[Any]:
    times = {"timestamp_field": "event_timestamp", "created_timestamp_column": "created"}
    source: Any = (
        SparkSource(name="src", path=path, file_format="parquet", **times)
        if spark_source
        else FileSource(name="src", path=path, **times)
    )
    schema = [Field(name="rate", dtype=Float64)]
    if partition:
        schema.append(Field(name=partition, dtype=String))
    view = FeatureView(name="v", entities=[DRIVER], ttl=timedelta(0), schema=schema, source=source)
    return [DRIVER, source, view]


ENTITIES = pd.DataFrame(
    {
        "driver_id": [1, 1, 2, 2, 3, 1, 2],
        "event_timestamp": [T0 + timedelta(hours=h) for h in (0, 1, 1, 4, 1, 6, 6)],
    }
)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_reads_the_same_files_with_the_same_ties(
    tmp_path: Path, spark: Any, layout: str
) -> None:
    _write(tmp_path)
    pattern, partition = LAYOUTS[layout]
    objects = _objects(str(tmp_path / pattern), partition)
    ours = _spark_only_store(tmp_path / "spark", objects)
    duck = make_duck_twin(ours, tmp_path / "duck", objects)
    features = ["v:rate"] + ([f"v:{partition}"] if partition else [])
    want = duck.get_historical_features(entity_df=ENTITIES, features=features).to_arrow()
    got = ours.get_historical_features(entity_df=ENTITIES, features=features).to_arrow()
    assert got.to_pylist() == want.to_pylist()
    rates = want.column("rate").to_pylist()
    if layout != "one-level glob":  # it reads only the files two folders down
        assert rates[0] == 0.2  # part-10 wins the tie: natural order, not byte order
    assert not {9.1, 9.2} & set(rates)  # hidden names are not data
    # The pulls materialization runs on: the same winners and the same rows.
    args: dict[str, Any] = {
        "data_source": objects[1],
        "join_key_columns": ["driver_id"],
        "feature_name_columns": ["rate"],
        "timestamp_field": "event_timestamp",
        "created_timestamp_column": "created",
        "start_date": T0 - timedelta(days=1),
        "end_date": T0 + timedelta(days=1),
    }
    for pull in ("pull_latest_from_table_or_query", "pull_all_from_table_or_query"):
        want_rows = getattr(DuckDBParquetOfflineStore, pull)(config=duck.config, **args)
        got_rows = getattr(SparkOfflineStore, pull)(config=ours.config, **args)
        order = [
            ("driver_id", "ascending"),
            ("event_timestamp", "ascending"),
            ("rate", "ascending"),
        ]
        want_table, got_table = want_rows.to_arrow(), got_rows.to_arrow()
        assert got_table.num_rows == want_table.num_rows > 0
        assert got_table.sort_by(order).to_pylist() == want_table.sort_by(order).to_pylist()


def test_a_spark_source_path_breaks_ties_in_natural_order_too(tmp_path: Path, spark: Any) -> None:
    # A SparkSource's path is listed by Spark (as in Feast's Spark store); its files still
    # rank in natural order, decoded from the URIs Spark reports.
    _write(tmp_path)
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("part-2.parquet", "part-10.parquet", "part-9.parquet", "p%41+ü.parquet"):
        (flat / name).write_bytes((tmp_path / "data" / name).read_bytes())
    ours = _spark_only_store(tmp_path / "spark", _objects(str(flat), None, spark_source=True))
    duck = make_duck_twin(ours, tmp_path / "duck", _objects(str(flat), None))
    want = duck.get_historical_features(entity_df=ENTITIES, features=["v:rate"]).to_arrow()
    got = ours.get_historical_features(entity_df=ENTITIES, features=["v:rate"]).to_arrow()
    assert got.to_pylist() == want.to_pylist()
    assert want.column("rate").to_pylist()[:2] == [0.2, 0.2]


def test_a_source_file_spark_would_skip_is_a_clear_error(tmp_path: Path, spark: Any) -> None:
    path = tmp_path / "_rates.parquet"
    pd.DataFrame(
        {"driver_id": [1], "event_timestamp": [T0], "created": [T0], "rate": [0.5]}
    ).to_parquet(path)
    ours = _spark_only_store(tmp_path / "spark", _objects(str(path), None))
    with pytest.raises(InvalidRequestError, match="rename the file"):
        ours.get_historical_features(entity_df=ENTITIES, features=["v:rate"]).to_arrow()


def test_entity_parquet_paths_read_as_duckdb_reads_them(
    tmp_path: Path, spark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Entity files as pandas writes them (nanosecond times, which Spark would misread as
    # seconds), several files in natural order, nested, with duplicate rows: every row back
    # once, in DuckDB's order (files in natural order, then rows), with the same values.
    _write(tmp_path)
    objects = _objects(str(tmp_path / "data"), None)
    ours = _spark_only_store(tmp_path / "spark", objects)
    duck = make_duck_twin(ours, tmp_path / "duck", objects)
    entities = tmp_path / "entities"
    hours = [0, 1, 1, 4, 6, 2]
    for i, name in enumerate(["part-10.parquet", "part-2.parquet", "2024/part-1.parquet"]):
        (entities / name).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {
                "driver_id": [1, 2, 3, 1][: 2 + i % 2] * 2,
                "event_timestamp": [
                    T0 + timedelta(hours=h, microseconds=7) for h in hours[: 2 * (2 + i % 2)]
                ],
                "label": [f"{name}-{j}" for j in range(2 * (2 + i % 2))],
            }
        ).to_parquet(entities / name)
    monkeypatch.chdir(tmp_path)  # a relative glob is relative to the working directory
    for source in (entities / "part-2.parquet", entities, "entities/*.parquet"):
        want = duck.get_historical_features(entity_df=str(source), features=["v:rate"]).to_df()
        got = ours.get_historical_features(entity_df=str(source), features=["v:rate"]).to_df()
        pd.testing.assert_frame_equal(got, want, obj=str(source))
    labels = want["label"].tolist()  # the last source: the glob, two files
    assert labels[0] == "part-2.parquet-0"
    assert labels[-1] == "part-10.parquet-3"
    with pytest.raises(InvalidRequestError, match=r"entity path .* matches no Parquet file"):
        ours.get_historical_features(entity_df="missing/*.parquet", features=["v:rate"]).to_df()
