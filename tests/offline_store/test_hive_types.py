"""Hive partition columns read with the types the feature view declares, on both stores.

DuckDB's ``read_parquet`` and Spark's partition discovery guess a type from folder names
(``day=2024-01-01`` a date, ``k=7`` an integer, ``k=0042`` the integer 42 on Spark), and
pyarrow does when a push splits rows into partitions. These tests pin the declared types:
training sets, materialization pulls and pushes, on DuckDB and Spark, and stock Feast's file
store where it is right (it reads ``day`` as the string it is).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

from offline_store.partitions import duckdb_hive_keys
from offline_store.sources import parquet_scan
from offline_store.spark import SparkOfflineStore
from offline_store.store import DuckDBParquetOfflineStore
from tests.offline_store.repo_helpers import DRIVER, SPARK_STORE, make_store

T0 = datetime(2024, 1, 1, tzinfo=UTC)
ACCOUNT = Entity(name="account", join_keys=["k"], value_type=ValueType.STRING)
STORES = ["duckdb", "spark"]
PULL_STORES = {"duckdb": DuckDBParquetOfflineStore, "spark": SparkOfflineStore}


def _daily_objects() -> list[Any]:
    """Driver rows partitioned by day and zero-padded hour, both declared by the view."""
    source = FileSource(name="daily_src", path="data/daily", timestamp_field="event_timestamp")
    view = FeatureView(
        name="daily",
        entities=[DRIVER],
        ttl=timedelta(0),
        schema=[
            Field(name="rate", dtype=Float64),
            Field(name="day", dtype=String),
            Field(name="hour", dtype=Int64),
        ],
        source=source,
    )
    return [DRIVER, source, view]


def _account_objects() -> list[Any]:
    """Accounts partitioned by their String join key."""
    source = FileSource(name="acct_src", path="data/accounts", timestamp_field="event_timestamp")
    view = FeatureView(
        name="acct",
        entities=[ACCOUNT],
        ttl=timedelta(0),
        schema=[Field(name="balance", dtype=Float64)],
        source=source,
    )
    return [ACCOUNT, source, view]


def _part(folder: Path, **columns: list[Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    times = pa.array(columns.pop("event_timestamp"), pa.timestamp("us", tz="UTC"))
    pq.write_table(pa.table({"event_timestamp": times, **columns}), folder / "part-0.parquet")


def _write_daily(root: Path) -> None:
    daily = root / "data" / "daily"
    _part(
        daily / "day=2024-01-01" / "hour=07",
        driver_id=[1],
        event_timestamp=[T0 + timedelta(hours=7)],
        rate=[0.5],
    )
    _part(
        daily / "day=2024-01-02" / "hour=13",
        driver_id=[1],
        event_timestamp=[T0 + timedelta(days=1, hours=13)],
        rate=[0.7],
    )


def _write_accounts(root: Path, keys: tuple[str, ...]) -> None:
    for i, key in enumerate(keys):
        _part(
            root / "data" / "accounts" / f"k={key}",
            event_timestamp=[T0],
            balance=[float(i + 1)],
        )


def _store(root: Path, objects: list[Any], kind: str, request: pytest.FixtureRequest) -> Any:
    if kind == "spark":
        request.getfixturevalue("spark")  # the shared session the Spark store runs on
        return make_store(root, objects, offline_store=SPARK_STORE)
    if kind == "feast":
        return make_store(root, objects, offline_store="file")
    return make_store(root, objects)


DAILY_ENTITIES = pd.DataFrame(
    {
        "driver_id": [1, 1, 2],
        "event_timestamp": [
            T0 + timedelta(hours=8),
            T0 + timedelta(days=1, hours=14),
            T0 + timedelta(hours=8),
        ],
    }
)


@pytest.mark.parametrize("kind", STORES)
def test_string_and_int_partition_features_read_as_declared_in_training_sets(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    fs = _store(tmp_path, _daily_objects(), kind, request)
    _write_daily(tmp_path)

    _assert_daily_training_set(fs)


@pytest.mark.parametrize("kind", STORES)
def test_partitions_spark_wrote_read_as_declared_in_training_sets(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest, spark: Any
) -> None:
    # Spark's own files carry its schema in their footers, which the Spark store then leaves
    # to Spark to infer (a job): the partition types must be right on that path too.
    fs = _store(tmp_path, _daily_objects(), kind, request)
    rows = pd.DataFrame(
        {
            "driver_id": [1, 1],
            "event_timestamp": [T0 + timedelta(hours=7), T0 + timedelta(days=1, hours=13)],
            "rate": [0.5, 0.7],
            "day": ["2024-01-01", "2024-01-02"],
            "hour": ["07", "13"],
        }
    )
    target = str(tmp_path / "data" / "daily")
    spark.createDataFrame(rows).write.partitionBy("day", "hour").parquet(target)

    _assert_daily_training_set(fs)


def _assert_daily_training_set(fs: FeatureStore) -> None:
    result = fs.get_historical_features(
        entity_df=DAILY_ENTITIES, features=["daily:rate", "daily:day", "daily:hour"]
    ).to_arrow()

    assert result.schema.field("day").type == pa.string()  # not a DATE
    assert result.schema.field("hour").type == pa.int64()  # not text ("07"), not int32
    assert result.column("day").to_pylist() == ["2024-01-01", "2024-01-02", None]
    assert result.column("hour").to_pylist() == [7, 13, None]
    assert result.column("rate").to_pylist() == [0.5, 0.7, None]


@pytest.mark.filterwarnings("ignore:Downcasting object dtype arrays:FutureWarning")
def test_string_partition_feature_equals_stock_feasts_file_store(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    ours = _store(tmp_path / "ours", _daily_objects(), "duckdb", request)
    stock = _store(tmp_path / "stock", _daily_objects(), "feast", request)
    _write_daily(tmp_path / "ours")
    _write_daily(tmp_path / "stock")
    refs = ["daily:rate", "daily:day"]
    # Rows that all have a match: Feast's dask join fails on this source when one has none.
    entities = DAILY_ENTITIES.iloc[:2]

    mine = ours.get_historical_features(entity_df=entities, features=refs).to_df()
    theirs = stock.get_historical_features(entity_df=entities, features=refs).to_df()

    theirs = theirs.sort_values("event_timestamp", ignore_index=True)
    assert mine["rate"].tolist() == theirs["rate"].tolist() == [0.5, 0.7]
    # Feast reads the partition as a pandas category of the folder names' strings.
    assert (
        mine["day"].tolist() == theirs["day"].astype(str).tolist() == ["2024-01-01", "2024-01-02"]
    )


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("keys", [("0042", "7"), ("7", "12")], ids=["zero-padded", "digits"])
def test_string_join_key_partitions_match_the_entity_rows_that_name_them(
    tmp_path: Path, kind: str, keys: tuple[str, ...], request: pytest.FixtureRequest
) -> None:
    fs = _store(tmp_path, _account_objects(), kind, request)
    _write_accounts(tmp_path, keys)
    entities = pd.DataFrame(
        {"k": [*keys, "42"], "event_timestamp": [T0 + timedelta(hours=1)] * (len(keys) + 1)}
    )

    result = fs.get_historical_features(entity_df=entities, features=["acct:balance"]).to_df()

    assert result["k"].tolist() == [*keys, "42"]
    # "42" is not "0042": a key read as an integer would give it 0042's balance.
    assert result["balance"].tolist()[: len(keys)] == [1.0, 2.0]
    assert pd.isna(result["balance"].iloc[-1])


@pytest.mark.parametrize("kind", STORES)
def test_materialization_pulls_give_string_partitions_as_strings(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    fs = _store(tmp_path, _daily_objects(), kind, request)
    _write_daily(tmp_path)
    source = fs.get_data_source("daily_src")
    args: dict[str, Any] = {
        "config": fs.config,
        "data_source": source,
        "join_key_columns": ["driver_id"],
        "feature_name_columns": ["rate", "day", "hour"],
        "timestamp_field": "event_timestamp",
        "created_timestamp_column": None,
        "start_date": T0 - timedelta(days=1),
        "end_date": T0 + timedelta(days=3),
    }
    store = PULL_STORES[kind]

    latest = store.pull_latest_from_table_or_query(**args).to_arrow()
    every = store.pull_all_from_table_or_query(**args).to_arrow()

    assert latest.column("day").to_pylist() == ["2024-01-02"]
    assert sorted(every.column("day").to_pylist()) == ["2024-01-01", "2024-01-02"]
    # Materialized through Feast's engine, online values equal the training set's.
    fs.materialize(T0 - timedelta(days=1), T0 + timedelta(days=3), ["daily"])
    online = fs.get_online_features(
        features=["daily:day", "daily:hour", "daily:rate"], entity_rows=[{"driver_id": 1}]
    ).to_dict()
    assert (online["day"], online["hour"], online["rate"]) == (["2024-01-02"], [13], [0.7])


@pytest.mark.parametrize("kind", STORES)
def test_an_event_date_partition_orders_and_filters_by_time(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    # A daily snapshot whose event time is its partition: undeclared columns are text, but
    # the source's timestamps stay timestamps.
    source = FileSource(name="snap_src", path="data/snap", timestamp_field="ds")
    view = FeatureView(
        name="snap",
        entities=[DRIVER],
        ttl=timedelta(days=1),
        schema=[Field(name="rate", dtype=Float64)],
        source=source,
    )
    fs = _store(tmp_path, [DRIVER, source, view], kind, request)
    for day, rate in (("2024-01-01", 0.1), ("2024-01-02", 0.2), ("2024-01-10", 0.3)):
        folder = tmp_path / "data" / "snap" / f"ds={day}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"driver_id": [1], "rate": [rate]}), folder / "part-0.parquet")
    entities = pd.DataFrame(
        {"driver_id": [1, 1], "event_timestamp": [T0 + timedelta(days=1, hours=5), T0]}
    )

    result = fs.get_historical_features(entity_df=entities, features=["snap:rate"]).to_df()
    latest = PULL_STORES[kind].pull_latest_from_table_or_query(
        config=fs.config,
        data_source=source,
        join_key_columns=["driver_id"],
        feature_name_columns=["rate"],
        timestamp_field="ds",
        created_timestamp_column=None,
        start_date=T0,
        end_date=T0 + timedelta(days=5),
    )

    assert result["rate"].tolist() == [0.2, 0.1]
    assert latest.to_arrow().to_pylist() == [
        {"driver_id": 1, "rate": 0.2, "ds": T0 + timedelta(days=1)}
    ]


def test_a_pushed_string_key_lands_in_the_folder_that_reads_back_equal(tmp_path: Path) -> None:
    fs: FeatureStore = make_store(tmp_path, _account_objects())
    _write_accounts(tmp_path, ("0042", "7"))
    pushed = pa.table(
        {
            "event_timestamp": pa.array([T0 + timedelta(minutes=5)], pa.timestamp("us", tz="UTC")),
            "balance": [9.0],
            "k": ["0042"],
        }
    )

    DuckDBParquetOfflineStore.offline_write_batch(
        fs.config, fs.get_feature_view("acct"), pushed, None
    )

    folders = sorted(p.name for p in (tmp_path / "data" / "accounts").iterdir())
    assert folders == ["k=0042", "k=7"]  # not a new k=42
    assert len(list((tmp_path / "data" / "accounts" / "k=0042").glob("*.parquet"))) == 2
    entities = pd.DataFrame({"k": ["0042"], "event_timestamp": [T0 + timedelta(hours=1)]})
    result = fs.get_historical_features(entity_df=entities, features=["acct:balance"]).to_df()
    assert result["balance"].tolist() == [9.0]


def test_a_pushed_int_partition_value_lands_where_it_reads_back_equal(tmp_path: Path) -> None:
    fs: FeatureStore = make_store(tmp_path, _daily_objects())
    _write_daily(tmp_path)
    pushed = pa.table(
        {
            "driver_id": [3],
            "event_timestamp": pa.array([T0 + timedelta(hours=9)], pa.timestamp("us", tz="UTC")),
            "rate": [0.9],
            "day": ["2024-01-01"],
            "hour": [9],
        }
    )

    DuckDBParquetOfflineStore.offline_write_batch(
        fs.config, fs.get_feature_view("daily"), pushed, None
    )

    assert (tmp_path / "data" / "daily" / "day=2024-01-01" / "hour=9").is_dir()
    entities = pd.DataFrame({"driver_id": [3], "event_timestamp": [T0 + timedelta(hours=10)]})
    result = fs.get_historical_features(
        entity_df=entities, features=["daily:day", "daily:hour", "daily:rate"]
    ).to_arrow()
    assert result.select(["day", "hour", "rate"]).to_pylist() == [
        {"day": "2024-01-01", "hour": 9, "rate": 0.9}
    ]


@pytest.mark.parametrize(
    "folders",
    ["k=1", "a=1/plain/b=2", "k=", "sp ace=x y", "a=b=c", "=v", "plain"],
)
def test_the_partition_keys_named_are_the_ones_duckdb_reads(tmp_path: Path, folders: str) -> None:
    # hive_types naming anything else is an error, so the port of DuckDB's parser must agree.
    path = tmp_path / folders / "part-0.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1]}), path)
    con = duckdb.connect()

    found = con.execute(f"SELECT * FROM read_parquet(['{path}'], hive_partitioning=true)")
    columns = [d[0] for d in found.description]

    assert columns[1:] == duckdb_hive_keys(str(path))
    declared = dict.fromkeys(["x", *duckdb_hive_keys(str(path))], ValueType.INT32)
    assert con.execute(f"SELECT x FROM {parquet_scan([str(path)], partition_types=declared)}")


def test_files_that_disagree_on_partitions_read_without_partition_columns(tmp_path: Path) -> None:
    for folder in ("day=2024-01-01", "plain"):
        (tmp_path / folder).mkdir()
        pq.write_table(pa.table({"x": [1]}), tmp_path / folder / "part-0.parquet")
    files = [str(p) for p in sorted(tmp_path.glob("*/*.parquet"))]
    scan = parquet_scan(files, partition_types={"day": ValueType.STRING})

    assert duckdb.connect().execute(f"SELECT * FROM {scan}").fetchall() == [(1,), (1,)]


def test_views_over_one_source_share_its_read_unless_they_type_a_column_apart() -> None:
    """Spark reads a source once for all the views over it: the partition types are what
    they declare together (not each view's own, which would split the read)."""
    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Int64, String

    from offline_store.spark import _partition_types

    src = FileSource(name="s", path="data/s", timestamp_field="event_timestamp")
    other = FileSource(name="o", path="data/o", timestamp_field="event_timestamp")
    key = Entity(name="k", join_keys=["k"])

    def view(name: str, fields: list[Field], source: FileSource = src) -> FeatureView:
        return FeatureView(name=name, entities=[key], schema=[Field(name="k", dtype=String),
                           *fields], source=source)  # fmt: skip

    a = view("a", [Field(name="day", dtype=String)])
    b = view("b", [Field(name="n", dtype=Int64)])
    c = view("c", [Field(name="day", dtype=Int64)], other)
    types = _partition_types([a, b, c])
    assert types[0] == types[1]  # one read of "s" serves a and b
    assert types[0]["day"] == ValueType.STRING
    assert types[2]["day"] == ValueType.INT64
    clash = view("clash", [Field(name="n", dtype=String)])
    split = _partition_types([a, b, clash])
    assert split[1]["n"] != split[2]["n"]
