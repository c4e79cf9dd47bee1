"""get_historical_features end to end through Feast: inputs, sources, time zones, errors, ODFVs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import FeatureService, Field, FileSource, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64

from foundation.errors import (
    FeatureStoreError,
    InvalidEntityError,
    InvalidRequestError,
    InvalidTimestampError,
)
from offline_store.job import DuckDBRetrievalJob
from tests.offline_store.repo_helpers import (
    CUSTOMER_SCHEMA,
    DRIVER_SCHEMA,
    make_store,
    three_views,
    write_rows,
)

T0 = datetime(2024, 6, 1, tzinfo=UTC)
DRIVER_ROWS = [
    {"driver_id": 1, "event_timestamp": T0, "created": T0, "rate": 0.5, "trips": 10},
    {
        "driver_id": 1,
        "event_timestamp": T0 + timedelta(minutes=3),
        "created": T0,
        "rate": 0.7,
        "trips": 11,
    },
    {"driver_id": 2, "event_timestamp": T0, "created": T0, "rate": 0.9, "trips": 20},
]
ENTITIES = pd.DataFrame(
    {
        "driver_id": [1, 2, 1, 1, 3],
        "event_timestamp": [
            T0 + timedelta(minutes=2),
            T0 + timedelta(minutes=5),  # exactly at the 5-minute TTL edge: included
            T0 + timedelta(minutes=9),  # 6 minutes after the last row: outside TTL
            T0 + timedelta(minutes=2),  # duplicate of the first row
            T0,
        ],
        "label": ["a", "b", "c", "d", "e"],
    }
)
EXPECTED = [
    (1, "a", 0.5, 10),
    (2, "b", 0.9, 20),
    (1, "c", None, None),
    (1, "d", 0.5, 10),
    (3, "e", None, None),
]
FEATURES = ["driver_fv:rate", "driver_fv:trips"]


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    return [(r["driver_id"], r["label"], r["rate"], r["trips"]) for r in table.to_pylist()]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return tmp_path


def _store(root: Path, driver_path: str = "data/driver.parquet") -> Any:
    objects = three_views()
    for i, obj in enumerate(objects):
        if isinstance(obj, FileSource) and obj.name == "driver_src":
            objects[i] = FileSource(
                name="driver_src",
                path=driver_path,
                timestamp_field="event_timestamp",
                created_timestamp_column="created",
            )
            driver_fv = next(o for o in objects if getattr(o, "name", "") == "driver_fv")
            driver_fv.batch_source = objects[i]
            driver_fv.stream_source = None
    return make_store(root, objects)


def test_entity_rows_come_back_in_order_with_duplicates_and_labels(repo: Path) -> None:
    fs = _store(repo)
    write_rows(repo / "data" / "driver.parquet", DRIVER_SCHEMA, DRIVER_ROWS)
    table = fs.get_historical_features(entity_df=ENTITIES, features=FEATURES).to_arrow()
    assert _rows(table) == EXPECTED
    assert table.column_names == ["driver_id", "event_timestamp", "label", "rate", "trips"]


@pytest.mark.parametrize("kind", ["arrow", "parquet", "parquet_dir", "sql", "sql after comments"])
def test_every_entity_source_kind_gives_the_same_rows(repo: Path, kind: str) -> None:
    fs = _store(repo)
    write_rows(repo / "data" / "driver.parquet", DRIVER_SCHEMA, DRIVER_ROWS)
    source: Any
    if kind == "arrow":
        source = pa.Table.from_pandas(ENTITIES, preserve_index=False)
    elif kind == "parquet":
        source = str(repo / "entities.parquet")
        ENTITIES.to_parquet(source)
    elif kind == "parquet_dir":
        (repo / "ent").mkdir()
        ENTITIES.iloc[:3].to_parquet(repo / "ent" / "part-0.parquet")
        ENTITIES.iloc[3:].to_parquet(repo / "ent" / "part-1.parquet")
        source = str(repo / "ent")
    else:
        # SQL over the offline data: the entity rows are the driver source's own rows,
        # one minute after each event, kept in a stable order.
        source = (
            "SELECT driver_id, event_timestamp + INTERVAL 1 MINUTE AS event_timestamp, "
            "CAST(trips AS VARCHAR) AS label FROM driver_src ORDER BY trips"
        )
        if kind == "sql after comments":  # was read as a Parquet path
            source = "-- training rows\n  /* one minute\nafter each event */ " + source
    job = fs.get_historical_features(entity_df=source, features=FEATURES)
    if kind.startswith("sql"):
        assert _rows(job.to_arrow()) == [
            (1, "10", 0.5, 10),
            (1, "11", 0.7, 11),
            (2, "20", 0.9, 20),
        ]
    else:
        assert _rows(job.to_arrow()) == EXPECTED


@pytest.mark.parametrize("layout", ["directory", "hive", "glob"])
def test_sources_may_be_directories_hive_partitions_or_globs(repo: Path, layout: str) -> None:
    table = pa.Table.from_pylist(DRIVER_ROWS, schema=DRIVER_SCHEMA)
    if layout == "directory":
        (repo / "data" / "drv").mkdir(parents=True)
        pq.write_table(table.slice(0, 2), repo / "data" / "drv" / "a.parquet")
        pq.write_table(table.slice(2), repo / "data" / "drv" / "b.parquet")
        path = "data/drv"
    elif layout == "hive":
        for d in (1, 2):
            part = repo / "data" / "hive" / f"region=r{d}"
            part.mkdir(parents=True)
            rows = table.filter(pa.compute.equal(table["driver_id"], d))
            pq.write_table(rows, part / "p.parquet")
        path = "data/hive"
    else:
        (repo / "data" / "g").mkdir(parents=True)
        pq.write_table(table, repo / "data" / "g" / "x-1.parquet")
        pq.write_table(table.slice(0, 0), repo / "data" / "g" / "ignored.txt.parquet.bak")
        path = "data/g/x-*.parquet"
    fs = _store(repo, path)
    result = fs.get_historical_features(entity_df=ENTITIES, features=FEATURES).to_arrow()
    assert _rows(result) == EXPECTED


def test_a_full_tie_across_files_goes_to_the_later_file_in_natural_order(repo: Path) -> None:
    # Same driver, event and created time in two files: part-10 comes after part-2 in
    # natural order (not in byte order), so its row wins, though its row number is lower.
    # The customer view reads one file, so the query joins both kinds of source.
    tie = {"driver_id": 1, "event_timestamp": T0, "created": T0}
    filler = [
        {"driver_id": 2, "event_timestamp": T0, "created": T0, "rate": 9.0, "trips": 9},
        {"driver_id": 2, "event_timestamp": T0, "created": T0, "rate": 8.0, "trips": 8},
    ]
    write_rows(
        repo / "data" / "drv" / "part-2.parquet",
        DRIVER_SCHEMA,
        [*filler, {**tie, "rate": 0.1, "trips": 1}],
    )
    write_rows(
        repo / "data" / "drv" / "part-10.parquet", DRIVER_SCHEMA, [{**tie, "rate": 0.2, "trips": 2}]
    )
    write_rows(
        repo / "data" / "customer.parquet",
        CUSTOMER_SCHEMA,
        [{"customer_id": "c", "ts": T0, "created": T0, "bal": 5.0, "tier": "gold"}],
    )
    fs = _store(repo, "data/drv")
    entities = pd.DataFrame(
        {"driver_id": [1], "customer_id": ["c"], "event_timestamp": [T0 + timedelta(minutes=1)]}
    )
    rows = (
        fs.get_historical_features(entity_df=entities, features=[*FEATURES, "customer_fv:tier"])
        .to_arrow()
        .to_pylist()
    )
    assert [(r["rate"], r["trips"], r["tier"]) for r in rows] == [(0.2, 2, "gold")]


def test_naive_times_are_utc_and_other_zones_are_converted(repo: Path) -> None:
    fs = _store(repo)
    naive_source = pa.Table.from_pylist(
        [{**r, "event_timestamp": r["event_timestamp"].replace(tzinfo=None)} for r in DRIVER_ROWS],
        schema=DRIVER_SCHEMA.set(1, pa.field("event_timestamp", pa.timestamp("us"))),
    )
    pq.write_table(naive_source, repo / "data" / "driver.parquet")
    paris = ENTITIES.copy()
    paris["event_timestamp"] = paris["event_timestamp"].dt.tz_convert(ZoneInfo("Europe/Paris"))
    naive = ENTITIES.copy()
    naive["event_timestamp"] = naive["event_timestamp"].dt.tz_localize(None)
    for frame in (paris, naive, pa.Table.from_pandas(paris, preserve_index=False)):
        table = fs.get_historical_features(entity_df=frame, features=FEATURES).to_arrow()
        assert _rows(table) == EXPECTED
        assert table["event_timestamp"].type.tz == "UTC"
        assert table["event_timestamp"][0].as_py() == T0 + timedelta(minutes=2)


def test_results_stream_to_parquet_without_building_a_table_in_memory(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = _store(repo)
    write_rows(repo / "data" / "driver.parquet", DRIVER_SCHEMA, DRIVER_ROWS)
    job = fs.get_historical_features(entity_df=ENTITIES, features=FEATURES)
    assert isinstance(job, DuckDBRetrievalJob)
    expected = job.to_arrow()

    def no_tables(*args: Any, **kwargs: Any) -> pa.Table:
        raise AssertionError("to_parquet must not materialize the result in Python")

    monkeypatch.setattr(DuckDBRetrievalJob, "_to_arrow_internal", no_tables)
    path = job.to_parquet(repo / "out" / "train.parquet")
    written = pq.read_table(path)
    assert written.column_names == expected.column_names
    assert written.to_pylist() == expected.to_pylist()


def test_on_demand_views_are_computed_on_the_joined_rows(repo: Path) -> None:
    objects = three_views()
    driver_fv = next(o for o in objects if getattr(o, "name", "") == "driver_fv")
    request = RequestSource(name="req", schema=[Field(name="distance", dtype=Float64)])

    @on_demand_feature_view(
        sources=[driver_fv, request],
        schema=[Field(name="cost", dtype=Float64)],
        mode="pandas",
    )
    def pricing(inputs: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame()
        out["cost"] = inputs["distance"] * inputs["rate"].fillna(1.0)
        return out

    fs = make_store(repo, [*objects, request, pricing])
    write_rows(repo / "data" / "driver.parquet", DRIVER_SCHEMA, DRIVER_ROWS)
    entities = ENTITIES.assign(distance=[10.0, 20.0, 30.0, 40.0, 50.0])
    for full in (False, True):
        job = fs.get_historical_features(
            entity_df=entities, features=["pricing:cost"], full_feature_names=full
        )
        col = "pricing__cost" if full else "cost"
        table = job.to_arrow()
        assert table[col].to_pylist() == [5.0, 18.0, 30.0, 20.0, 50.0]
        streamed = pa.Table.from_batches(list(job.iter_batches(2)))
        assert streamed[col].to_pylist() == [5.0, 18.0, 30.0, 20.0, 50.0]


def test_missing_join_key_is_an_invalid_entity_error(repo: Path) -> None:
    fs = _store(repo)
    write_rows(repo / "data" / "driver.parquet", DRIVER_SCHEMA, DRIVER_ROWS)
    job = fs.get_historical_features(
        entity_df=ENTITIES.rename(columns={"driver_id": "driver"}), features=FEATURES
    )
    with pytest.raises(InvalidEntityError, match="driver_id") as info:
        job.to_arrow()
    assert info.value.details["join_key"] == "driver_id"


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (ENTITIES.drop(columns=["event_timestamp"]), "event_timestamp"),
        (ENTITIES.assign(event_timestamp=["2024-06-01", "x", None, "y", "z"]), "unparseable"),
    ],
)
def test_bad_entity_timestamps_are_invalid_timestamp_errors(
    repo: Path, frame: pd.DataFrame, match: str
) -> None:
    fs = _store(repo)
    write_rows(repo / "data" / "driver.parquet", DRIVER_SCHEMA, DRIVER_ROWS)
    source = pa.Table.from_pandas(frame, preserve_index=False)
    with pytest.raises(InvalidTimestampError, match=match):
        fs.get_historical_features(entity_df=source, features=FEATURES).to_arrow()


def test_missing_source_data_and_bad_sql_are_invalid_requests(repo: Path) -> None:
    fs = _store(repo)
    with pytest.raises(InvalidRequestError, match="matches no Parquet file"):
        fs.get_historical_features(entity_df=ENTITIES, features=FEATURES).to_arrow()
    write_rows(repo / "data" / "driver.parquet", DRIVER_SCHEMA, DRIVER_ROWS)
    with pytest.raises(InvalidRequestError, match="entity rows"):
        fs.get_historical_features(
            entity_df="SELECT * FROM no_such_table", features=FEATURES
        ).to_arrow()


def test_feature_name_clashing_with_an_entity_column_is_refused(repo: Path) -> None:
    fs = _store(repo)
    write_rows(repo / "data" / "driver.parquet", DRIVER_SCHEMA, DRIVER_ROWS)
    clash = ENTITIES.assign(rate=1)
    with pytest.raises(InvalidRequestError, match="full_feature_names"):
        fs.get_historical_features(entity_df=clash, features=FEATURES).to_arrow()
    table = fs.get_historical_features(
        entity_df=clash, features=FEATURES, full_feature_names=True
    ).to_arrow()
    assert table["driver_fv__rate"].to_pylist()[0] == 0.5


@pytest.mark.parametrize("column", ["__row_id", "__entity_ts", "__probe0", "__m0", "__x"])
@pytest.mark.parametrize("kind", ["DataFrame", "Parquet"])
def test_entity_columns_named_like_the_joins_own_are_refused(
    repo: Path, column: str, kind: str
) -> None:
    # Before: a label "__row_id" came back as 0, 1, 2..., a column "__entity_ts" became the
    # join time, "__probe0" failed inside the query.
    fs = _store(repo)
    write_rows(repo / "data" / "driver.parquet", DRIVER_SCHEMA, DRIVER_ROWS)
    rows: Any = ENTITIES.assign(**{column: [9, 5, 7, 3, 1]})
    if kind == "Parquet":
        rows.to_parquet(repo / "entities.parquet")
        rows = str(repo / "entities.parquet")
    with pytest.raises(InvalidEntityError, match=f"'{column}'.*rename") as info:
        fs.get_historical_features(entity_df=rows, features=FEATURES).to_arrow()
    assert info.value.details["columns"] == [column]


def test_a_pandas_index_column_is_kept_as_a_label(repo: Path) -> None:
    fs = _store(repo)
    write_rows(repo / "data" / "driver.parquet", DRIVER_SCHEMA, DRIVER_ROWS)
    ENTITIES.set_index(pd.Index([10, 11, 12, 13, 14])).to_parquet(repo / "entities.parquet")
    table = fs.get_historical_features(
        entity_df=str(repo / "entities.parquet"), features=FEATURES
    ).to_arrow()
    assert _rows(table) == EXPECTED
    assert table["__index_level_0__"].to_pylist() == [10, 11, 12, 13, 14]


@pytest.mark.parametrize(
    ("rows", "clash"),
    [
        (ENTITIES.assign(Label=["x"] * 5), ["label", "Label"]),
        (pd.concat([ENTITIES[["driver_id"]].rename(columns={"driver_id": "DRIVER_ID"}) + 998,
                    ENTITIES], axis=1), ["DRIVER_ID", "driver_id"]),
    ],
)  # fmt: skip
def test_entity_columns_differing_only_in_case_are_refused(
    repo: Path, rows: pd.DataFrame, clash: list[str]
) -> None:
    # Column names compare without case in the join: "Label" came back renamed "Label_1",
    # and a "DRIVER_ID" label before the key made the key look missing.
    fs = _store(repo)
    write_rows(repo / "data" / "driver.parquet", DRIVER_SCHEMA, DRIVER_ROWS)
    with pytest.raises(InvalidEntityError, match="differ only in case") as info:
        fs.get_historical_features(entity_df=rows, features=FEATURES).to_arrow()
    assert info.value.details["columns"] == clash


def test_a_label_named_like_a_feature_but_for_case_is_refused(repo: Path) -> None:
    fs = _store(repo)
    write_rows(repo / "data" / "driver.parquet", DRIVER_SCHEMA, DRIVER_ROWS)
    with pytest.raises(InvalidRequestError, match="full_feature_names"):
        fs.get_historical_features(entity_df=ENTITIES.assign(RATE=1), features=FEATURES).to_arrow()


def test_join_key_of_the_wrong_type_is_an_invalid_entity_error(repo: Path) -> None:
    fs = _store(repo)
    write_rows(repo / "data" / "driver.parquet", DRIVER_SCHEMA, DRIVER_ROWS)
    as_text = ENTITIES.assign(driver_id=ENTITIES["driver_id"].astype(str))
    with pytest.raises(InvalidEntityError, match="VARCHAR") as info:
        fs.get_historical_features(entity_df=as_text, features=FEATURES).to_arrow()
    assert info.value.details["feature_view"] == "driver_fv"


def test_source_missing_a_declared_feature_column_is_named(repo: Path) -> None:
    fs = _store(repo)
    table = pa.Table.from_pylist(DRIVER_ROWS, schema=DRIVER_SCHEMA).drop_columns(["trips"])
    pq.write_table(table, repo / "data" / "driver.parquet")
    with pytest.raises(InvalidRequestError, match="trips"):
        fs.get_historical_features(entity_df=ENTITIES, features=FEATURES).to_arrow()


def test_without_entity_rows_every_key_in_range_comes_back_as_of_end_date(repo: Path) -> None:
    fs = _store(repo)
    write_rows(repo / "data" / "driver.parquet", DRIVER_SCHEMA, DRIVER_ROWS)
    table = fs.get_historical_features(
        features=FEATURES,
        start_date=T0 - timedelta(hours=1),
        end_date=T0 + timedelta(minutes=4),
    ).to_arrow()
    rows = sorted((r["driver_id"], r["rate"], r["trips"]) for r in table.to_pylist())
    assert rows == [(1, 0.7, 11), (2, 0.9, 20)]
    write_rows(repo / "data" / "customer.parquet", CUSTOMER_SCHEMA, [])
    with pytest.raises(InvalidRequestError, match="same join keys"):
        fs.get_historical_features(
            features=[*FEATURES, "customer_fv:tier"], end_date=T0 + timedelta(minutes=4)
        )


def test_a_corrupt_source_file_is_a_feature_store_error_not_a_crash(repo: Path) -> None:
    fs = _store(repo)
    (repo / "data" / "driver.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(FeatureStoreError, match=r"driver\.parquet"):
        fs.get_historical_features(entity_df=ENTITIES, features=FEATURES).to_arrow()


def test_projection_join_key_map_and_alias_read_the_renamed_entity_column(repo: Path) -> None:
    objects = three_views()
    driver_fv = next(o for o in objects if getattr(o, "name", "") == "driver_fv")
    projected = driver_fv.with_name("other_driver").with_join_key_map(
        {"driver_id": "other_driver_id"}
    )
    # One projection per view: Feast 0.67's FeatureService.__eq__ cannot sort two projections
    # of the same view (it compares their None and str aliases).
    service = FeatureService(name="pairs", features=[projected[["rate"]]])
    fs = make_store(repo, [*objects, service])
    write_rows(repo / "data" / "driver.parquet", DRIVER_SCHEMA, DRIVER_ROWS)
    entities = ENTITIES.assign(other_driver_id=[2, 2, 2, 1, 1])
    table = fs.get_historical_features(
        entity_df=entities, features=fs.get_feature_service("pairs"), full_feature_names=True
    ).to_arrow()
    assert "driver_fv__rate" not in table.column_names
    assert table["other_driver__rate"].to_pylist() == [0.9, 0.9, None, 0.5, 0.5]
