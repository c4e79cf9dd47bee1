"""Both point-in-time joins (DuckDB and Spark) equal the naive reference on Hypothesis data.

Timestamps come from a coarse minute grid so that exact TTL boundaries, event-time ties broken
by created time, full ties, entity rows before any event and duplicate entity rows all occur
often; keys are small ints, strings and a compound pair, over six views (three of them keyed
by the driver alone: the Spark join shares one shuffle between them; one reads the pair source by
driver only and without its created column; two read the driver source with different TTLs,
one feature each: Spark scans it once for both; one has no entity at all and reads the customer
source's latest row of any customer). The Spark store runs fewer examples (each is a
few Spark jobs in ``local[2]``) on the same generators. The DuckDB join runs in each of its
shapes (see ``join_shape``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from feast import FeatureStore, FeatureView, Field, FileSource
from feast.types import Float64, Int64
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offline_store import historical
from tests.offline_store.reference import RefView, reference_pit
from tests.offline_store.repo_helpers import (
    CUSTOMER_SCHEMA,
    DRIVER,
    DRIVER_SCHEMA,
    PAIR_SCHEMA,
    SPARK_STORE,
    make_store,
    three_views,
    write_rows,
)

BASE = datetime(2024, 1, 1, tzinfo=UTC)
TTL_DRIVER = timedelta(minutes=5)
TTL_PAIR = timedelta(minutes=10)
TTL_DRIVER_LONG = timedelta(minutes=15)
FEATURES = [
    "driver_fv:rate",
    "customer_fv:balance",
    "customer_fv:tier",
    "pair_fv:together",
    "driver_pairs_fv:together_any",
    "driver_long_fv:trips",
    "any_customer_fv:any_balance",
]


def six_views() -> list[Any]:
    """The three views, plus one keyed by the driver alone over the pair source (no TTL, no
    created column), one over the driver source with a longer TTL and one without entities
    over the customer source."""
    # No created column: its ties on event time go to the later row alone.
    source = FileSource(
        name="driver_pairs_src",
        path="data/pair.parquet",
        timestamp_field="event_timestamp",
        field_mapping={"together": "together_any"},
    )
    view = FeatureView(
        name="driver_pairs_fv",
        entities=[DRIVER],
        ttl=timedelta(0),
        schema=[Field(name="together_any", dtype=Int64)],
        source=source,
    )
    objects = [*three_views(TTL_DRIVER, TTL_PAIR), source, view]
    driver_fv = next(o for o in objects if getattr(o, "name", "") == "driver_fv")
    long_view = FeatureView(
        name="driver_long_fv",
        entities=[DRIVER],
        ttl=TTL_DRIVER_LONG,
        schema=[Field(name="trips", dtype=Int64)],
        source=driver_fv.batch_source,
    )
    any_source = FileSource(
        name="any_customer_src",
        path="data/customer.parquet",
        timestamp_field="ts",
        created_timestamp_column="created",
        field_mapping={"bal": "any_balance"},
    )
    entityless = FeatureView(
        name="any_customer_fv",
        entities=[],
        ttl=TTL_DRIVER,
        schema=[Field(name="any_balance", dtype=Float64)],
        source=any_source,
    )
    return [*objects, long_view, any_source, entityless]


def minute(m: int) -> datetime:
    return BASE + timedelta(minutes=m)


event_time = st.integers(0, 12).map(minute)
created_time = st.one_of(st.none(), st.integers(0, 3).map(minute))
drivers = st.integers(0, 2)
customers = st.sampled_from(["a", "b", "é"])
maybe_float = st.one_of(st.none(), st.sampled_from([0.5, 1.25, -2.0, 1e10]))
maybe_int = st.one_of(st.none(), st.integers(-5, 5))

driver_rows = st.lists(
    st.fixed_dictionaries(
        {
            "driver_id": drivers,
            "event_timestamp": event_time,
            "created": created_time,
            "rate": maybe_float,
            "trips": maybe_int,
        }
    ),
    max_size=15,
)
customer_rows = st.lists(
    st.fixed_dictionaries(
        {
            "customer_id": customers,
            "ts": event_time,
            "created": created_time,
            "bal": maybe_float,
            "tier": st.one_of(st.none(), st.sampled_from(["gold", "blue", ""])),
        }
    ),
    max_size=10,
)
pair_rows = st.lists(
    st.fixed_dictionaries(
        {
            "driver_id": drivers,
            "customer_id": customers,
            "event_timestamp": event_time,
            "created": created_time,
            "together": maybe_int,
        }
    ),
    max_size=15,
)
entity_rows = st.lists(
    st.fixed_dictionaries(
        {
            "driver_id": st.integers(0, 3),
            "customer_id": st.sampled_from(["a", "b", "é", "nobody"]),
            # Entity times reach before the first event and past the last one.
            "event_timestamp": st.integers(-2, 16).map(minute),
            "label": st.integers(0, 1),
        }
    ),
    min_size=1,
    max_size=12,
)


def _split_objects() -> list[Any]:
    """The views, the driver view's source a directory of two files (the others one file
    each), so one query joins multi-file and single-file sources, also on the same keys."""
    objects = six_views()
    source = FileSource(
        name="driver_src",
        path="data/driver",
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    for i, obj in enumerate(objects):
        if isinstance(obj, FileSource) and obj.name == "driver_src":
            objects[i] = source
        elif getattr(obj, "name", "") in ("driver_fv", "driver_long_fv"):
            obj.batch_source = source
    return objects


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    return make_store(tmp_path_factory.mktemp("pit_props"), six_views())


@pytest.fixture(scope="module")
def split_store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    return make_store(tmp_path_factory.mktemp("pit_props_split"), _split_objects())


@pytest.fixture(scope="module")
def spark_store(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> FeatureStore:
    return make_store(
        tmp_path_factory.mktemp("pit_props_spark"), six_views(), offline_store=SPARK_STORE
    )


@pytest.fixture(scope="module")
def spark_split_store(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> FeatureStore:
    return make_store(
        tmp_path_factory.mktemp("pit_props_spark_split"),
        _split_objects(),
        offline_store=SPARK_STORE,
    )


def ref_views(
    drv: list[dict[str, Any]],
    cus: list[dict[str, Any]],
    pair: list[dict[str, Any]],
    full: bool,
) -> list[RefView]:
    def out(view: str, name: str) -> str:
        return f"{view}__{name}" if full else name

    return [
        RefView(
            ("driver_id",),
            TTL_DRIVER,
            "event_timestamp",
            "created",
            {"rate": out("driver_fv", "rate")},
            drv,
        ),
        RefView(
            ("customer_id",),
            timedelta(0),
            "ts",
            "created",
            {"bal": out("customer_fv", "balance"), "tier": out("customer_fv", "tier")},
            cus,
        ),
        RefView(
            ("driver_id", "customer_id"),
            TTL_PAIR,
            "event_timestamp",
            "created",
            {"together": out("pair_fv", "together")},
            pair,
        ),
        RefView(
            ("driver_id",),
            timedelta(0),
            "event_timestamp",
            None,
            {"together": out("driver_pairs_fv", "together_any")},
            pair,
        ),
        RefView(
            ("driver_id",),
            TTL_DRIVER_LONG,
            "event_timestamp",
            "created",
            {"trips": out("driver_long_fv", "trips")},
            drv,
        ),
        RefView(
            (),
            TTL_DRIVER,
            "ts",
            "created",
            {"bal": out("any_customer_fv", "any_balance")},
            cus,
        ),
    ]


def check_against_reference(
    store: FeatureStore,
    drv: list[dict[str, Any]],
    cus: list[dict[str, Any]],
    pair: list[dict[str, Any]],
    entities: list[dict[str, Any]],
    full: bool,
    driver_parts: int = 1,
) -> None:
    data = Path(store.repo_path) / "data"
    if driver_parts > 1:
        # The rows in order across the files, so "later file, later row" is list order.
        half = len(drv) // 2
        write_rows(data / "driver" / "part-0.parquet", DRIVER_SCHEMA, drv[:half])
        write_rows(data / "driver" / "part-1.parquet", DRIVER_SCHEMA, drv[half:])
    else:
        write_rows(data / "driver.parquet", DRIVER_SCHEMA, drv)
    write_rows(data / "customer.parquet", CUSTOMER_SCHEMA, cus)
    write_rows(data / "pair.parquet", PAIR_SCHEMA, pair)

    got = (
        store.get_historical_features(
            entity_df=pd.DataFrame(entities), features=FEATURES, full_feature_names=full
        )
        .to_arrow()
        .to_pylist()
    )

    expected = reference_pit(entities, ref_views(drv, cus, pair, full), "event_timestamp")
    assert got == expected


GIVEN = given(
    drv=driver_rows,
    cus=customer_rows,
    pair=pair_rows,
    entities=entity_rows,
    full=st.booleans(),
)


@pytest.fixture(params=["by row counts", "one join", "match first"])
def join_shape(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DuckDB join's shape per view: chosen by the row counts (the sizes here mix both
    shapes in one query), every view in one ASOF join, or every view's time matched first."""
    ratio = {"one join": 10**12, "match first": 0}.get(request.param)
    if ratio is not None:
        monkeypatch.setattr(historical, "MATCH_FIRST_RATIO", ratio)


@pytest.mark.parametrize(
    ("fixture", "driver_parts"),
    [("store", 1), ("split_store", 2)],
    ids=["one file per view", "driver source in two files"],
)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@GIVEN
def test_pit_join_matches_naive_reference(
    request: pytest.FixtureRequest,
    join_shape: None,
    fixture: str,
    driver_parts: int,
    drv: list[dict[str, Any]],
    cus: list[dict[str, Any]],
    pair: list[dict[str, Any]],
    entities: list[dict[str, Any]],
    full: bool,
) -> None:
    store = request.getfixturevalue(fixture)
    check_against_reference(store, drv, cus, pair, entities, full, driver_parts=driver_parts)


@pytest.mark.parametrize("strategy", ["window", "broadcast"])
@pytest.mark.parametrize(
    ("fixture", "driver_parts"),
    [("spark_store", 1), ("spark_split_store", 2)],
    ids=["one file per view", "driver source in two files"],
)
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@GIVEN
def test_spark_pit_join_matches_naive_reference(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    strategy: str,
    fixture: str,
    driver_parts: int,
    drv: list[dict[str, Any]],
    cus: list[dict[str, Any]],
    pair: list[dict[str, Any]],
    entities: list[dict[str, Any]],
    full: bool,
) -> None:
    """Both Spark plans (``join_strategy`` forced; ``auto`` would pick the window for these
    views, one of which has no TTL and one no entity)."""
    store = request.getfixturevalue(fixture)
    monkeypatch.setattr(store.config.offline_store, "join_strategy", strategy)
    check_against_reference(store, drv, cus, pair, entities, full, driver_parts=driver_parts)
