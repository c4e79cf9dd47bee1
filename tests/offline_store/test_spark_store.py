"""The Spark offline store gives the DuckDB store's exact answers on the example repo and more.

The example repo (feature_repo/, its generator's data) is applied once; a second repo directory
with the same registry and data selects ``offline_store.spark.SparkOfflineStore``. Every check
compares the two stores' results value for value (DuckDB is itself checked against the naive
reference in test_example_repo.py and test_pit_properties.py).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import Entity, FeatureService, FeatureStore, FeatureView
from feast.data_source import DataSource
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.on_demand_feature_view import OnDemandFeatureView

from foundation.errors import InvalidEntityError
from offline_store.spark import SparkOfflineStore
from offline_store.spark_entities import micro_timestamps
from offline_store.spark_job import SparkRetrievalJob
from offline_store.spark_session import SparkUnavailableError, spark_session
from offline_store.store import DuckDBParquetOfflineStore
from tests.offline_store.repo_helpers import SPARK_STORE, write_repo_yaml

ROOT = Path(__file__).resolve().parents[2]
END = datetime(2026, 11, 1, tzinfo=UTC)


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> tuple[FeatureStore, ...]:
    """(DuckDB store, Spark store) over the same registry and the same example data."""
    root = tmp_path_factory.mktemp("example_duck")
    shutil.copy(ROOT / "feature_repo" / "definitions.py", root / "definitions.py")
    write_repo_yaml(root)
    generator = _load(ROOT / "feature_repo" / "generate.py", "_spark_example_generate")
    generator.generate(root / "data", rows=2000, seed=11, end=END)
    definitions = _load(root / "definitions.py", "_spark_example_definitions")
    kinds = (Entity, DataSource, FeatureView, OnDemandFeatureView, FeatureService)
    duck = FeatureStore(repo_path=str(root))
    duck.apply([o for o in vars(definitions).values() if isinstance(o, kinds)])

    other = tmp_path_factory.mktemp("example_spark")
    os.symlink(root / "data", other / "data")
    write_repo_yaml(other, offline_store=SPARK_STORE)
    yaml = (other / "feature_store.yaml").read_text()
    (other / "feature_store.yaml").write_text(yaml.replace(str(other), str(root)))
    return duck, FeatureStore(repo_path=str(other))


def _trips(store: FeatureStore) -> Path:
    return Path(store.repo_path) / "data" / "trips.parquet"


@pytest.mark.parametrize("full", [False, True])
def test_feature_service_on_spark_equals_duckdb(
    stores: tuple[FeatureStore, ...], full: bool
) -> None:
    duck, spark_fs = stores
    service = duck.get_feature_service("ride_ranking_v1")
    want = duck.get_historical_features(
        entity_df=str(_trips(duck)), features=service, full_feature_names=full
    )
    got = spark_fs.get_historical_features(
        entity_df=str(_trips(duck)), features=service, full_feature_names=full
    )
    assert isinstance(got, SparkRetrievalJob)
    expected = want.to_arrow().to_pylist()
    result = got.to_arrow().to_pylist()
    assert len(result) == len(expected) > 100
    assert result == expected
    # The on-demand column is there, and the data exercises both hits and misses.
    assert any(name.endswith("estimated_fare") for name in result[0])
    conv = "driver_hourly_stats__conv_rate" if full else "conv_rate"
    hits = sum(row[conv] is not None for row in result)
    assert 0 < hits < len(result)


def test_pandas_entities_with_duplicates_keep_order_on_spark(
    stores: tuple[FeatureStore, ...],
) -> None:
    duck, spark_fs = stores
    trips = pq.read_table(_trips(duck)).slice(0, 300).to_pandas()
    # Duplicated rows, reversed order, naive timestamps (read as UTC).
    entities = pd.concat([trips, trips.iloc[::-1]], ignore_index=True)
    entities["event_timestamp"] = entities["event_timestamp"].dt.tz_localize(None)
    features = [
        "driver_hourly_stats:conv_rate",
        "driver_hourly_stats:is_active",
        "customer_profile:favourite_zones",
        "customer_profile:signup_ts",
        "driver_customer_stats:trips_together",
    ]
    want = duck.get_historical_features(entity_df=entities, features=features).to_df()
    got = spark_fs.get_historical_features(entity_df=entities, features=features).to_df()
    assert len(got) == len(entities) > 100
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_pandas_entity_rows_stay_out_of_the_plan_and_the_session_setting_is_kept(
    stores: tuple[FeatureStore, ...], spark: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """pandas rows are converted by the executors, not carried in the plan as a local
    relation that every analysis walks, and the session's own threshold is left as it was."""
    duck, spark_fs = stores
    trips = pq.read_table(_trips(duck)).slice(0, 200).to_pandas()
    setting = "spark.sql.execution.arrow.localRelationThreshold"
    spark.conf.set(setting, "32MB")
    try:
        job = spark_fs.get_historical_features(
            entity_df=trips, features=["driver_hourly_stats:conv_rate"]
        )
        frame = job.to_spark_df()
        assert spark.conf.get(setting) == "32MB"
    finally:
        spark.conf.unset(setting)
    capsys.readouterr()
    frame.explain(mode="extended")
    plans = capsys.readouterr().out
    assert "== Analyzed Logical Plan ==" in plans
    assert "LocalRelation" not in plans
    assert "LocalTableScan" not in plans
    assert frame.count() == len(trips)


def test_concurrent_builds_put_the_session_setting_back(spark: Any) -> None:
    """A second entity frame started while the first one's is being made, and finished
    after it, leaves the session's threshold as it was.

    Without the lock the second build would read the first one's 0 as the session's value
    and put it back last. The events force that order; with the lock the second build
    waits for the first, so the first one's wait for it times out.
    """
    import threading

    from offline_store.spark_entities import _distributed_frame

    setting = "spark.sql.execution.arrow.localRelationThreshold"
    real = spark.createDataFrame
    table = pa.table({"driver_id": [1, 2, 3]})
    frames: list[Any] = []  # a thread's exception would otherwise pass unseen
    second_inside, first_done = threading.Event(), threading.Event()

    def build() -> None:
        frames.append(_distributed_frame(spark, table))

    second = threading.Thread(target=build)

    def paced(*args: Any, **kwargs: Any) -> Any:
        if second.ident is None:  # the first build, holding the threshold at 0
            second.start()
            second_inside.wait(timeout=1.0)
        else:
            second_inside.set()
            first_done.wait(timeout=10.0)
        return real(*args, **kwargs)

    spark.conf.set(setting, "32MB")
    try:
        with mock.patch.object(spark, "createDataFrame", side_effect=paced):
            first = threading.Thread(target=build)
            first.start()
            first.join()
            first_done.set()
            second.join()
        assert spark.conf.get(setting) == "32MB"
        assert [frame.count() for frame in frames] == [3, 3]
    finally:
        spark.conf.unset(setting)


def test_entity_columns_the_join_would_overwrite_are_refused_on_spark_too(
    stores: tuple[FeatureStore, ...], spark: Any
) -> None:
    duck, spark_fs = stores
    trips = pq.read_table(_trips(duck)).slice(0, 20).to_pandas()
    features = ["driver_hourly_stats:conv_rate"]
    spark_rows = spark.createDataFrame(trips.assign(__entity_ts=trips["event_timestamp"]))
    for rows, named, both in (
        (trips.assign(__row_id=7), "__row_id", True),  # was overwritten by the row numbers
        (spark_rows, "__entity_ts", False),  # a Spark DataFrame: the Spark store's alone
        (spark.createDataFrame(trips.assign(__row_id=7)), "__row_id", False),
        (trips.assign(Label=1, LABEL=2), "differ only in case", True),
    ):
        for store in (duck, spark_fs) if both else (spark_fs,):
            with pytest.raises(InvalidEntityError, match=named):
                store.get_historical_features(entity_df=rows, features=features).to_df()


def test_spark_dataframe_entities_keep_their_partition_order(
    stores: tuple[FeatureStore, ...], spark: Any
) -> None:
    duck, spark_fs = stores
    trips = pq.read_table(_trips(duck)).to_pandas()
    entities = spark.createDataFrame(trips).repartition(5)  # rows spread over 5 partitions
    in_order = entities.toPandas()  # the order of a Spark DataFrame: partition by partition
    assert not in_order["event_timestamp"].equals(trips["event_timestamp"])
    features = ["driver_hourly_stats:conv_rate", "customer_profile:favourite_zones"]
    want = duck.get_historical_features(entity_df=in_order, features=features).to_df()
    got = spark_fs.get_historical_features(entity_df=entities, features=features).to_df()
    assert len(got) == len(trips) > 100
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_latest_and_all_pulls_equal_duckdb(stores: tuple[FeatureStore, ...]) -> None:
    duck, spark_fs = stores
    view = duck.get_feature_view("driver_customer_stats")
    args: dict[str, Any] = {
        "data_source": view.batch_source,
        "join_key_columns": ["driver_id", "customer_id"],
        "feature_name_columns": ["trips_together", "avg_tip", "last_rating"],
        "timestamp_field": "event_timestamp",
        "created_timestamp_column": "created",
        "start_date": END - timedelta(days=20),
        "end_date": END - timedelta(days=2),
    }
    keys = ["driver_id", "customer_id"]
    for pull in ("pull_latest_from_table_or_query", "pull_all_from_table_or_query"):
        want = getattr(DuckDBParquetOfflineStore, pull)(config=duck.config, **args).to_arrow()
        got = getattr(SparkOfflineStore, pull)(config=spark_fs.config, **args).to_arrow()
        order = [(k, "ascending") for k in [*keys, "event_timestamp", "created", "avg_tip"]]
        assert got.num_rows == want.num_rows > 0
        assert got.sort_by(order).to_pylist() == want.sort_by(order).to_pylist()


def _spark_only_store(root: Path, objects: list[Any]) -> FeatureStore:
    root.mkdir(parents=True, exist_ok=True)
    write_repo_yaml(root, offline_store=SPARK_STORE)
    store = FeatureStore(repo_path=str(root))
    store.apply(objects)
    return store


def make_duck_twin(store: FeatureStore, root: Path, objects: list[Any]) -> FeatureStore:
    """The same objects in a repo on the DuckDB store (absolute source paths)."""
    root.mkdir(parents=True, exist_ok=True)
    write_repo_yaml(root)
    twin = FeatureStore(repo_path=str(root))
    twin.apply(objects)
    return twin


def test_pandas_nanosecond_parquet_and_spark_sources_read_exactly(
    tmp_path: Path, spark: Any
) -> None:
    from feast import Field, FileSource
    from feast.types import Float64

    from tests.offline_store.repo_helpers import DRIVER

    # pandas writes TIMESTAMP(NANOS); Spark refuses those by default.
    frame = pd.DataFrame(
        {
            "driver_id": [1, 1, 2, 2],
            "event_timestamp": pd.to_datetime(
                [
                    "2024-01-01 00:00:00.000001999",
                    "2024-01-01 00:05:00",
                    "2024-01-01 00:00:00",
                    "2024-01-02 00:00:00",
                ],
                utc=True,
                format="ISO8601",
            ),
            "rate": [0.1, 0.2, 0.3, None],
        }
    )
    path = tmp_path / "ns.parquet"
    frame.to_parquet(path)
    assert pq.read_schema(path).field("event_timestamp").type.unit == "ns"
    # A Spark table of the same rows (rounded to microseconds as the store rounds them).
    exact = micro_timestamps(pa.Table.from_pandas(frame, preserve_index=False))
    spark.createDataFrame(exact).createOrReplaceTempView("ns_rates")
    sources = [
        FileSource(name="file_src", path=str(path), timestamp_field="event_timestamp"),
        SparkSource(
            name="path_src",
            path=str(path),
            file_format="parquet",
            timestamp_field="event_timestamp",
        ),
        SparkSource(name="table_src", table="ns_rates", timestamp_field="event_timestamp"),
        SparkSource(
            name="query_src", query="SELECT * FROM ns_rates", timestamp_field="event_timestamp"
        ),
    ]
    views = [
        FeatureView(
            name=f"v_{s.name}",
            entities=[DRIVER],
            ttl=timedelta(0),
            schema=[Field(name="rate", dtype=Float64)],
            source=s,
        )
        for s in sources
    ]
    store = _spark_only_store(tmp_path / "repo", [DRIVER, *sources, *views])
    entities = pd.DataFrame(
        {
            "driver_id": [1, 1, 2, 3],
            "event_timestamp": pd.to_datetime(
                [
                    "2024-01-01 00:00:00.000001",
                    "2024-01-01 00:01:00",
                    "2024-01-03 00:00:00",
                    "2024-01-03 00:00:00",
                ],
                utc=True,
                format="ISO8601",
            ),
        }
    )
    refs = [f"v_{s.name}:rate" for s in sources]
    got = store.get_historical_features(
        entity_df=entities, features=refs, full_feature_names=True
    ).to_df()
    want = make_duck_twin(store, tmp_path / "duck", [DRIVER, sources[0], views[0]])
    expected = want.get_historical_features(
        entity_df=entities, features=refs[:1], full_feature_names=True
    ).to_df()
    # 1.999 us rounds to 2 us (as in DuckDB): after the first entity row, so no match there;
    # driver 2's latest row holds a null; driver 3 has no rows.
    first = expected[refs[0].replace(":", "__")]
    assert first.iloc[1] == 0.1
    assert first.iloc[[0, 2, 3]].isna().all()
    for ref in refs:
        column = ref.replace(":", "__")
        pd.testing.assert_series_equal(got[column], first, check_names=False, obj=column)


def test_to_parquet_writes_from_executors_in_entity_order(
    stores: tuple[FeatureStore, ...], tmp_path: Path
) -> None:
    duck, spark_fs = stores
    service = duck.get_feature_service("ride_ranking_v1")
    job = spark_fs.get_historical_features(entity_df=str(_trips(duck)), features=service)
    assert isinstance(job, SparkRetrievalJob)
    expected = duck.get_historical_features(
        entity_df=str(_trips(duck)), features=service
    ).to_arrow()
    # Nothing may come back to the driver: collecting would fail.
    frame_type = type(job.to_spark_df())
    with (
        mock.patch.object(frame_type, "toArrow", side_effect=AssertionError("collected")),
        mock.patch.object(frame_type, "collect", side_effect=AssertionError("collected")),
        mock.patch.object(frame_type, "toPandas", side_effect=AssertionError("collected")),
    ):
        out = job.to_parquet(str(tmp_path / "train"))
    written = pq.read_table(out)
    assert written.column_names == expected.column_names
    assert written.to_pylist() == expected.to_pylist()


def test_missing_join_key_is_the_same_clear_error(stores: tuple[FeatureStore, ...]) -> None:
    _, spark_fs = stores
    entities = pd.DataFrame({"customer_id": ["c_1"], "event_timestamp": [END]})
    with pytest.raises(InvalidEntityError, match="lack join key 'driver_id'"):
        spark_fs.get_historical_features(
            entity_df=entities, features=["driver_hourly_stats:conv_rate"]
        ).to_df()


def test_missing_pyspark_or_java_says_how_to_fix(spark: Any) -> None:
    with (
        mock.patch.dict(sys.modules, {"pyspark": None}),
        pytest.raises(SparkUnavailableError, match=r"pip install 'featurestore\[spark\]'"),
    ):
        spark_session()
    from pyspark.sql import SparkSession

    with (
        mock.patch.object(SparkSession, "getActiveSession", return_value=None),
        mock.patch.dict(os.environ, {"PATH": "/nonexistent", "JAVA_HOME": ""}),
        pytest.raises(SparkUnavailableError, match="Java 17"),
    ):
        spark_session()


def test_spark_store_result_is_a_lazy_spark_dataframe(stores: tuple[FeatureStore, ...]) -> None:
    duck, spark_fs = stores
    job = spark_fs.get_historical_features(
        entity_df=str(_trips(duck)), features=["driver_hourly_stats:conv_rate"]
    )
    assert isinstance(job, SparkRetrievalJob)
    frame = job.to_spark_df()
    assert frame.count() == pq.read_metadata(_trips(duck)).num_rows
    assert frame.columns[-1] == "conv_rate"
    assert isinstance(job.to_arrow(), pa.Table)


def test_sdk_training_set_saved_dataset_and_split_on_spark(
    stores: tuple[FeatureStore, ...], tmp_path: Path
) -> None:
    from offline_store.saved import load_training_dataset, save_training_dataset
    from offline_store.sdk import get_training_dataset
    from offline_store.split import time_split

    duck, spark_fs = stores
    entities = str(_trips(duck))
    features = ["driver_hourly_stats:conv_rate", "customer_profile:membership_tier"]
    want = get_training_dataset(entities, features, store=duck, output="arrow")
    assert isinstance(want, pa.Table)
    path = get_training_dataset(
        entities, features, store=spark_fs, output="parquet", path=tmp_path / "train"
    )
    assert pq.read_table(path).to_pylist() == want.to_pylist()

    record = save_training_dataset(entities, features, name="rides_spark", store=spark_fs)
    assert record.row_count == want.num_rows
    loaded = load_training_dataset("rides_spark", store=spark_fs)
    assert pa.Table.from_pandas(loaded, preserve_index=False).to_pylist() == want.to_pylist()
    parts = time_split(loaded)
    assert len(parts.train) + len(parts.validation) + len(parts.test) == want.num_rows


def test_entityless_view_and_no_entity_rows_match_duckdb(tmp_path: Path, spark: Any) -> None:
    from feast import Field, FileSource
    from feast.types import Int64

    from tests.offline_store.repo_helpers import DRIVER

    path = tmp_path / "totals.parquet"
    pq.write_table(
        pa.table(
            {
                "event_timestamp": pa.array(
                    [END - timedelta(hours=h) for h in (5, 3, 3, 1)], pa.timestamp("us", tz="UTC")
                ),
                "total": pa.array([1, 2, 3, None], pa.int64()),
                "driver_id": pa.array([1, 2, 1, 2], pa.int64()),
            }
        ),
        path,
    )

    def objects() -> list[Any]:
        src = FileSource(name="totals_src", path=str(path), timestamp_field="event_timestamp")
        return [
            DRIVER,
            src,
            FeatureView(
                name="totals", entities=[], ttl=timedelta(hours=3),
                schema=[Field(name="total", dtype=Int64)], source=src,
            ),
            FeatureView(
                name="per_driver", entities=[DRIVER], ttl=timedelta(0),
                schema=[Field(name="total", dtype=Int64)], source=src,
            ),
        ]  # fmt: skip

    ours = _spark_only_store(tmp_path / "spark", objects())
    duck = make_duck_twin(ours, tmp_path / "duck", objects())
    entities = pd.DataFrame(
        {
            "driver_id": [2, 1, 1],
            "event_timestamp": [END - timedelta(hours=4), END - timedelta(hours=2), END],
        }
    )
    for store_args in (
        {"entity_df": entities, "features": ["totals:total"]},
        {"entity_df": entities, "features": ["per_driver:total"]},
        {"entity_df": None, "features": ["per_driver:total"], "start_date": END - timedelta(1),
         "end_date": END},
    ):  # fmt: skip
        want = duck.get_historical_features(**store_args).to_arrow()
        got = ours.get_historical_features(**store_args).to_arrow()
        order = [("driver_id", "ascending")]
        assert got.sort_by(order).to_pylist() == want.sort_by(order).to_pylist(), store_args
        assert got.num_rows > 0


@pytest.mark.parametrize("ttl_ms", [1001, 1003, 250])
def test_a_ttl_with_a_fraction_of_a_second_keeps_its_inclusive_edge(
    tmp_path: Path, spark: Any, ttl_ms: int
) -> None:
    # 1.001 s as a float of seconds times 10**6 is 1_000_999.99...: truncated, the row
    # exactly at t - ttl fell out of the window.
    from feast import Field, FileSource
    from feast.types import Int64

    from tests.offline_store.repo_helpers import DRIVER

    ttl = timedelta(milliseconds=ttl_ms)
    t = END - timedelta(hours=1)
    path = tmp_path / "edge.parquet"
    pq.write_table(
        pa.table(
            {
                "driver_id": pa.array([1, 2], pa.int64()),
                # driver 1 exactly at the edge (kept), driver 2 one microsecond before it.
                "event_timestamp": pa.array(
                    [t - ttl, t - ttl - timedelta(microseconds=1)], pa.timestamp("us", tz="UTC")
                ),
                "v": pa.array([7, 8], pa.int64()),
            }
        ),
        path,
    )

    def objects() -> list[Any]:
        src = FileSource(name="edge_src", path=str(path), timestamp_field="event_timestamp")
        view = FeatureView(
            name="edge", entities=[DRIVER], ttl=ttl, schema=[Field(name="v", dtype=Int64)],
            source=src,
        )  # fmt: skip
        return [DRIVER, src, view]

    ours = _spark_only_store(tmp_path / "spark", objects())
    duck = make_duck_twin(ours, tmp_path / "duck", objects())
    entities = pd.DataFrame({"driver_id": [1, 2], "event_timestamp": [t, t]})
    for store in (duck, ours):
        frame = store.get_historical_features(entity_df=entities, features=["edge:v"]).to_df()
        assert frame["v"].tolist()[0] == 7, store.config.offline_store.type
        assert pd.isna(frame["v"].tolist()[1]), store.config.offline_store.type


@pytest.mark.parametrize("full", [False, True])
def test_latest_version_suffix_joins_each_feature_once(
    stores: tuple[FeatureStore, ...], full: bool
) -> None:
    """Feast hands the store ``view@latest:f`` next to ``view:f``: one column each; the SDK
    takes the suffix too."""
    from offline_store.sdk import get_training_dataset

    plain = ["driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate"]
    suffixed = ["driver_hourly_stats@latest:conv_rate", "driver_hourly_stats:acc_rate"]
    duck = stores[0]
    want = duck.get_historical_features(
        entity_df=str(_trips(duck)), features=plain, full_feature_names=full
    ).to_arrow()
    for store in stores:
        got = store.get_historical_features(
            entity_df=str(_trips(duck)), features=suffixed, full_feature_names=full
        ).to_arrow()
        assert got.column_names == want.column_names
        assert got.to_pylist() == want.to_pylist()
        sdk = get_training_dataset(
            str(_trips(duck)), suffixed, store=store, output="arrow", full_feature_names=full
        )
        assert sdk.to_pylist() == want.to_pylist()


def test_pandas_extension_dtypes_kept_like_duckdb_also_in_saved_parts(
    stores: tuple[FeatureStore, ...], tmp_path: Path
) -> None:
    """Entity columns given as ``Int64``/``boolean`` (with nulls) come back with their dtype
    from Spark as from DuckDB, and a dataset Spark's executors write keeps them for
    ``pd.read_parquet`` and ``load_training_dataset`` (in a ``_common_metadata`` file)."""
    from offline_store.saved import load_training_dataset, save_training_dataset

    duck, spark_fs = stores
    entities = pq.read_table(_trips(duck)).slice(0, 50).to_pandas()
    entities["label"] = pd.array([None if i % 7 == 0 else i for i in range(50)], "Int64")
    entities["flag"] = pd.array([None if i % 5 == 0 else i % 2 == 0 for i in range(50)], "boolean")
    features = ["driver_hourly_stats:conv_rate"]
    want = duck.get_historical_features(entity_df=entities, features=features).to_df()
    got = spark_fs.get_historical_features(entity_df=entities, features=features).to_df()
    assert str(got["label"].dtype) == "Int64"
    assert str(got["flag"].dtype) == "boolean"
    pd.testing.assert_frame_equal(got, want)

    folder = spark_fs.get_historical_features(entity_df=entities, features=features)
    path = folder.to_parquet(tmp_path / "parts")
    assert pd.read_parquet(path)["label"].dtype == want["label"].dtype
    save_training_dataset(entities, features, name="typed_spark", store=spark_fs)
    loaded = load_training_dataset("typed_spark", store=spark_fs)
    pd.testing.assert_frame_equal(loaded, want)
