"""What an on-demand view's UDF is handed, ours against stock ``feast serve`` on one repo.

Each view here answers with the names of the columns (pandas mode) or keys (python mode) it
was given, in order. Feast hands a UDF the request's join keys, then its request data (both
in request order), then every feature of the response that comes from a view it declares
(the ones it declares under short and ``view__feature`` names), but not other views'
features; a UDF that reads a join key must work in ours too.
The features' own order is not compared: Feast groups them in sets, so it changes from one
server process to the next.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from online_store.embedded import EmbeddedRedis
from tests.service.conftest import (
    AppClient,
    columns,
    new_repo,
    ours_and_feast_serve,
)

DEFINITIONS = """
from datetime import timedelta
from typing import Any
import pandas as pd
from feast import (Entity, FeatureService, FeatureView, Field, FileSource, RequestSource,
                  ValueType)
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
in_drv = FeatureView(
    name="in_drv", entities=[driver], ttl=timedelta(days=30),
    schema=[Field(name="conv_rate", dtype=Float64), Field(name="trips", dtype=Int64)],
    source=FileSource(name="in_drv_src", path="data/in_drv.parquet",
                      timestamp_field="event_timestamp"),
)
in_cus = FeatureView(
    name="in_cus", entities=[customer], ttl=timedelta(days=30),
    schema=[Field(name="spend", dtype=Float64)],
    source=FileSource(name="in_cus_src", path="data/in_cus.parquet",
                      timestamp_field="event_timestamp"),
)
trip = RequestSource(name="in_trip", schema=[Field(name="distance_km", dtype=Float64)])
clock = RequestSource(name="in_clock", schema=[Field(name="hour", dtype=Int64)])


@on_demand_feature_view(sources=[in_drv, trip], schema=[Field(name="seen_a", dtype=String)],
                        mode="pandas")
def seen_pd(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    # `feast apply` tries the UDF on its declared sources alone: no join key then.
    ids = inputs["driver_id"].tolist() if "driver_id" in inputs else [None] * len(inputs)
    out["seen_a"] = ["|".join(map(str, inputs.columns)) + f"#{v}" for v in ids]
    return out


@on_demand_feature_view(sources=[in_cus, clock], schema=[Field(name="seen_b", dtype=String)],
                        mode="pandas")
def seen_pd_cus(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["seen_b"] = ["|".join(map(str, inputs.columns))] * len(inputs)
    return out


@on_demand_feature_view(sources=[in_drv[["conv_rate"]], trip],
                        schema=[Field(name="seen_d", dtype=String)], mode="pandas")
def seen_sub(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["seen_d"] = ["|".join(map(str, inputs.columns))] * len(inputs)
    return out


@on_demand_feature_view(sources=[in_drv, trip], schema=[Field(name="seen_c", dtype=String)],
                        mode="python")
def seen_py(inputs: dict[str, Any]) -> dict[str, Any]:
    ids = inputs.get("driver_id") or [None] * len(inputs["distance_km"])
    return {"seen_c": ["|".join(inputs) + f"#{v}" for v in ids]}


# in_drv's trips under another name: a view Feast does not count as seen_sub's source.
in_aliased = FeatureService(name="in_aliased",
                            features=[in_drv.with_name("drv2")[["trips"]], seen_sub])
"""
ENTITIES = {
    "driver_id": [1, 2],
    "customer_id": ["c1", "c2"],
    "distance_km": [4.0, 12.5],
    "hour": [7, 23],
}


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, service_redis: EmbeddedRedis
) -> Iterator[tuple[AppClient, httpx.Client]]:
    path, when = new_repo(tmp_path_factory, "odfv-inputs", DEFINITIONS)
    stamps = pa.array([when] * 2, pa.timestamp("us", tz="UTC"))
    drivers = {
        "driver_id": pa.array([1, 2], pa.int64()),
        "event_timestamp": stamps,
        "conv_rate": pa.array([0.5, 0.25], pa.float64()),
        "trips": pa.array([3, 7], pa.int64()),
    }
    pq.write_table(pa.table(drivers), path / "data" / "in_drv.parquet")
    customers = {
        "customer_id": pa.array(["c1", "c2"]),
        "event_timestamp": stamps,
        "spend": pa.array([10.0, 20.0]),
    }
    pq.write_table(pa.table(customers), path / "data" / "in_cus.parquet")
    with ours_and_feast_serve(
        path, project="inputs", redis_url=service_redis.url, when=when
    ) as both:
        yield both


def _seen(
    client: AppClient | httpx.Client, features: list[str] | str, full: bool
) -> dict[str, list[tuple[list[str], frozenset[str], str]]]:
    """Each view's answer, less the ``_ts:<view>`` columns Feast's Redis store leaks into
    the UDF's input (its own hash field for event times; not data the UDF asked for).
    ``features`` is a list of refs or a feature service's name."""
    named = {"feature_service": features} if isinstance(features, str) else {"features": features}
    body = {**named, "entities": ENTITIES, "full_feature_names": full}
    resp = client.post("/get-online-features", json=body)
    assert resp.status_code == 200, resp.text
    got = columns(resp.json())
    return {name: [_split(seen) for seen in col["values"]] for name, col in got.items()
            if "seen" in name}  # fmt: skip


def _split(seen: str) -> tuple[list[str], frozenset[str], str]:
    """(request columns in order, feature columns, the driver id the UDF read)."""
    names, _, driver = seen.partition("#")
    given = [c for c in names.split("|") if "_ts:" not in c]
    request = [c for c in given if c in ENTITIES]
    assert given[: len(request)] == request, f"request columns come first: {given}"
    return request, frozenset(given[len(request) :]), driver


@pytest.mark.parametrize("full_feature_names", [False, True])
@pytest.mark.parametrize(
    "features",
    [
        ["in_drv:conv_rate", "in_cus:spend", "seen_pd:seen_a", "seen_pd_cus:seen_b"],
        ["seen_pd:seen_a"],  # the view's inputs only: nothing else was asked for
        ["in_cus:spend", "in_drv:trips", "seen_pd:seen_a"],
    ],
    ids=["two-views", "alone", "other-order"],
)
def test_a_pandas_udf_is_handed_the_columns_feast_serve_hands_it(
    servers: tuple[AppClient, httpx.Client], features: list[str], full_feature_names: bool
) -> None:
    ours, feast = servers
    mine = _seen(ours, features, full_feature_names)
    theirs = _seen(feast, features, full_feature_names)
    assert mine == theirs
    assert mine  # the views answered
    # A join key the view does not declare as an entity is readable, as in Feast.
    seen_a = next(v for k, v in mine.items() if k.endswith("seen_a"))
    assert [driver for _, _, driver in seen_a] == ["1", "2"]
    request, features, _ = seen_a[0]
    assert request[:3] == ["driver_id", "customer_id", "distance_km"]
    assert features == {"conv_rate", "trips", "in_drv__conv_rate", "in_drv__trips"}


def test_a_python_udf_is_handed_the_keys_feast_serve_hands_it(
    servers: tuple[AppClient, httpx.Client],
) -> None:
    """Short names only: under full names Feast 0.67 drops python-mode outputs."""
    ours, feast = servers
    features = ["in_drv:conv_rate", "in_cus:spend", "seen_py:seen_c"]
    mine = _seen(ours, features, False)
    assert mine == _seen(feast, features, False)
    assert mine["seen_c"][1][2] == "2"


@pytest.mark.parametrize("full_feature_names", [False, True])
@pytest.mark.parametrize(
    ("features", "extra"),
    [
        (["in_drv:trips", "seen_sub:seen_d"], "trips"),  # asked for directly
        (["seen_sub:seen_d", "seen_pd:seen_a"], "trips"),  # another view's input
        (["in_cus:spend", "seen_sub:seen_d"], None),  # an undeclared view's: left out
        ("in_aliased", None),  # read under an alias: another view's to Feast, left out
    ],
    ids=["asked-for", "other-udf-input", "undeclared", "aliased"],
)
def test_a_udf_is_handed_the_other_features_of_a_view_it_declares_in_part(
    servers: tuple[AppClient, httpx.Client],
    features: list[str] | str,
    extra: str | None,
    full_feature_names: bool,
) -> None:
    """``in_drv[["conv_rate"]]`` declared, ``in_drv:trips`` read: Feast hands it ``trips``."""
    ours, feast = servers
    mine = _seen(ours, features, full_feature_names)
    assert mine == _seen(feast, features, full_feature_names)
    seen_d = next(v for k, v in mine.items() if k.endswith("seen_d"))
    given = seen_d[0][1]
    expected = {"conv_rate", "in_drv__conv_rate"}
    if extra:
        expected.add(f"in_drv__{extra}" if full_feature_names else extra)
    assert given == expected
