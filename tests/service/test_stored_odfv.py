"""On-demand views with ``write_to_online_store=True`` are read from Redis, like Feast.

``feast materialize`` runs such a view's transformation over its sources and stores the
outputs under the view's entities; ``feast serve`` then reads them back instead of running
the transformation (no request data needed). The service refused them with a 422.
``POST /write-to-online-store`` takes such a view's inputs, runs its transformation and
stores the outputs, as Feast's ``FeatureStore.write_to_online_store`` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from feast import FeatureStore

from online_store.embedded import EmbeddedRedis
from tests.service.conftest import AppClient, columns, new_repo, ours_and_feast_serve
from tests.service.differential_helpers import post_both
from tests.service.write_helpers import write_online

# The shop entity and its sales view (test_stored_odfv_request builds on them too).
SALES = """
from datetime import timedelta
import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String

shop = Entity(name="shop", join_keys=["shop_id"], value_type=ValueType.STRING)
sales = FeatureView(
    name="sales", entities=[shop], ttl=timedelta(0),
    schema=[Field(name="units", dtype=Int64), Field(name="price", dtype=Float64)],
    source=FileSource(name="sales_src", path="data/sales.parquet",
                      timestamp_field="event_timestamp"),
)
"""
DEFINITIONS = (
    SALES
    + """


@on_demand_feature_view(
    sources=[sales], entities=[shop], write_to_online_store=True, mode="pandas",
    schema=[Field(name="revenue", dtype=Float64), Field(name="band", dtype=String)],
)
def revenue(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["revenue"] = inputs["units"] * inputs["price"]
    out["band"] = ["high" if r > 100 else "low" for r in out["revenue"]]
    return out


@on_demand_feature_view(
    sources=[sales], entities=[shop], write_to_online_store=True, mode="pandas",
    schema=[Field(name="margin", dtype=Float64)],
)
def fragile(inputs: pd.DataFrame) -> pd.DataFrame:
    if (inputs["units"] == -1).any():
        raise ValueError("units of -1 are a sentinel this view refuses")
    out = pd.DataFrame()
    out["margin"] = inputs["price"] * 0.5
    return out


@on_demand_feature_view(
    sources=[sales], mode="pandas", schema=[Field(name="double_units", dtype=Int64)],
)
def computed(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["double_units"] = inputs["units"] * 2
    return out


shop_service = FeatureService(name="shop_service", features=[sales[["units"]], revenue])

# An entity without value_type (feast init's style): its key type comes from the views.
item = Entity(name="item", join_keys=["item_id"])
stock = FeatureView(
    name="stock", entities=[item], ttl=timedelta(0),
    schema=[Field(name="item_id", dtype=Int64), Field(name="qty", dtype=Int64)],
    source=FileSource(name="stock_src", path="data/stock.parquet",
                      timestamp_field="event_timestamp"),
)


@on_demand_feature_view(
    sources=[stock], entities=[item], write_to_online_store=True, mode="pandas",
    schema=[Field(name="twice", dtype=Int64)],
)
def restock(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["twice"] = inputs["qty"] * 2
    return out
"""
)
UNITS = {"s1": 10, "s2": 3}
PRICE = {"s1": 12.5, "s2": 2.0}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, datetime]:
    return new_repo(tmp_path_factory, "stored-odfv", DEFINITIONS)


@pytest.fixture(scope="module")
def servers(
    repo: tuple[Path, datetime], service_redis: EmbeddedRedis
) -> Iterator[tuple[AppClient, httpx.Client]]:
    path, when = repo
    table = {
        "shop_id": pa.array(list(UNITS)),
        "event_timestamp": pa.array([when] * len(UNITS), pa.timestamp("us", tz="UTC")),
        "units": pa.array(list(UNITS.values()), pa.int64()),
        "price": pa.array(list(PRICE.values())),
    }
    pq.write_table(pa.table(table), Path(path) / "data" / "sales.parquet")
    stock = {
        "item_id": pa.array([1, 2], pa.int64()),
        "event_timestamp": pa.array([when] * 2, pa.timestamp("us", tz="UTC")),
        "qty": pa.array([5, 7], pa.int64()),
    }
    pq.write_table(pa.table(stock), Path(path) / "data" / "stock.parquet")
    with ours_and_feast_serve(
        path, project="stored", redis_url=service_redis.url, when=when
    ) as both:
        yield both


def _both(servers: tuple[AppClient, httpx.Client], body: dict[str, Any]) -> dict[str, Any]:
    mine, theirs = post_both(*servers, body)
    # Feast orders a view's own features by set iteration (varies between processes).
    names, feast_names = (r["metadata"]["feature_names"] for r in (mine, theirs))
    assert sorted(names) == sorted(feast_names)
    return mine


def test_stored_outputs_are_read_like_feast_serve(
    servers: tuple[AppClient, httpx.Client],
) -> None:
    body = {"entities": {"shop_id": ["s1", "s2", "nope"]},
            "features": ["revenue:revenue", "revenue:band"]}  # fmt: skip
    cols = columns(_both(servers, body))
    assert cols["revenue"]["values"] == [125.0, 6.0, None]
    assert cols["band"]["values"] == ["high", "low", None]
    assert cols["revenue"]["statuses"] == ["PRESENT", "PRESENT", "NOT_FOUND"]
    # Stored values carry the time they were written: not the 1970 of computed ones.
    assert cols["revenue"]["event_timestamps"][0] != "1970-01-01T00:00:00Z"


def test_feature_service_mixing_a_view_and_a_stored_odfv(
    servers: tuple[AppClient, httpx.Client],
) -> None:
    body = {"entities": {"shop_id": ["s2", "s1"]}, "feature_service": "shop_service",
            "full_feature_names": True}  # fmt: skip
    cols = columns(_both(servers, body))
    assert cols["sales__units"]["values"] == [3, 10]
    assert cols["revenue__revenue"]["values"] == [6.0, 125.0]


def test_missing_join_key_names_the_stored_odfvs_entity(
    servers: tuple[AppClient, httpx.Client],
) -> None:
    ours, _ = servers
    resp = ours.post(
        "/get-online-features",
        json={"entities": {"store": ["s1"]}, "features": ["revenue:revenue"]},
    )
    assert resp.status_code == 422, resp.text
    assert "shop_id" in resp.text


def _read(
    servers: tuple[AppClient, httpx.Client], shops: list[str], features: list[str]
) -> dict[str, dict[str, list[Any]]]:
    return columns(_both(servers, {"entities": {"shop_id": shops}, "features": features}))


REVENUE = ["revenue:revenue", "revenue:band"]


def test_writing_an_on_demand_view_stores_its_transformed_outputs(
    servers: tuple[AppClient, httpx.Client],
) -> None:
    ours, _ = servers
    df = {"shop_id": ["w1", "w2"], "units": [20, 1], "price": [7.5, 2.0]}
    resp = write_online(ours, "revenue", df)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert (answer["rows"], answer["written"], answer["skipped_older"]) == (2, 2, 0)
    assert answer["feature_views"] == ["revenue"]
    cols = _read(servers, ["w1", "w2"], REVENUE)  # ours and feast serve agree
    assert cols["revenue"]["values"] == [150.0, 2.0]
    assert cols["band"]["values"] == ["high", "low"]
    assert cols["revenue"]["statuses"] == ["PRESENT", "PRESENT"]


def test_writing_an_on_demand_view_stores_what_feasts_sdk_stores(
    servers: tuple[AppClient, httpx.Client],
    repo: tuple[Path, datetime],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ours, _ = servers
    path, _ = repo
    inputs = {"units": [4, 40], "price": [3.25, 9.0]}
    resp = write_online(ours, "revenue", {"shop_id": ["ours1", "ours2"], **inputs})
    assert resp.status_code == 200, resp.text
    # Stock Feast (its own Redis store) loads the view's UDF from the registry.
    monkeypatch.syspath_prepend(str(path))
    stock = FeatureStore(repo_path=str(path) + "-stock")
    stock.write_to_online_store("revenue", df=pd.DataFrame({"shop_id": ["sdk1", "sdk2"], **inputs}))
    cols = _read(servers, ["ours1", "ours2", "sdk1", "sdk2"], REVENUE)
    assert cols["revenue"]["values"][:2] == cols["revenue"]["values"][2:] == [13.0, 360.0]
    assert cols["band"]["values"][:2] == cols["band"]["values"][2:] == ["low", "high"]
    assert set(cols["revenue"]["statuses"]) == {"PRESENT"}


def _nothing_stored(servers: tuple[AppClient, httpx.Client], shop: str, feature: str) -> None:
    cols = _read(servers, [shop], [feature])
    assert cols[feature.split(":")[1]]["statuses"] == ["NOT_FOUND"]


@pytest.mark.parametrize(
    ("df", "named"),
    [
        ({"shop_id": ["bad1"], "units": [3]}, "'price'"),
        ({"shop_id": ["bad1"], "units": ["ten"], "price": [1.0]}, "'units'"),
        ({"shop_id": ["bad1"], "units": [3], "price": [1.0], "revenue": [9.0]}, "'revenue'"),
        ({"shop_id": [None], "units": [3], "price": [1.0]}, "'shop_id'"),
    ],
    ids=["missing-input", "wrong-type", "output-sent-as-input", "null-join-key"],
)
def test_bad_on_demand_write_is_a_422_naming_the_column_and_writes_nothing(
    servers: tuple[AppClient, httpx.Client], df: dict[str, list[Any]], named: str
) -> None:
    ours, _ = servers
    resp = write_online(ours, "revenue", df)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert named in error["message"]
    assert error["type"] == "schema_mismatch"
    _nothing_stored(servers, "bad1", "revenue:revenue")


def test_a_transformation_that_raises_is_a_422_naming_the_view_and_writes_nothing(
    servers: tuple[AppClient, httpx.Client],
) -> None:
    ours, _ = servers
    df = {"shop_id": ["ok1", "bad2"], "units": [5, -1], "price": [1.0, 2.0]}
    resp = write_online(ours, "fragile", df)
    assert resp.status_code == 422, resp.text
    message = resp.json()["error"]["message"]
    assert "'fragile'" in message
    assert "ValueError" in message
    assert "transformation needs fixing" in message
    for shop in ("ok1", "bad2"):
        _nothing_stored(servers, shop, "fragile:margin")
    # The same view stores rows its transformation takes.
    resp = write_online(ours, "fragile", {"shop_id": ["ok1"], "units": [5], "price": [3.0]})
    assert resp.status_code == 200, resp.text
    assert _read(servers, ["ok1"], ["fragile:margin"])["margin"]["values"] == [1.5]


def test_writing_an_on_demand_view_not_stored_online_says_it_is_computed_at_lookup(
    servers: tuple[AppClient, httpx.Client],
) -> None:
    ours, _ = servers
    df = {"shop_id": ["c1"], "units": [3], "price": [1.0]}
    resp = write_online(ours, "computed", df)
    assert resp.status_code == 422, resp.text
    message = resp.json()["error"]["message"]
    assert "without write_to_online_store=True" in message
    assert "computed at lookup" in message


def test_redis_down_during_an_on_demand_write_is_a_503(
    servers: tuple[AppClient, httpx.Client],
) -> None:
    ours, _ = servers
    down = redis.exceptions.ConnectionError("Connection refused")
    with mock.patch("online_store.store.write_rows_atomic", side_effect=down):
        resp = write_online(ours, "revenue", {"shop_id": ["down1"], "units": [1], "price": [1.0]})
    assert resp.status_code == 503, resp.text
    error = resp.json()["error"]
    assert error["type"] == "backend_unavailable"
    assert "'revenue'" in error["message"]
    _nothing_stored(servers, "down1", "revenue:revenue")


def test_stored_odfv_keyed_by_an_entity_without_value_type(
    servers: tuple[AppClient, httpx.Client],
) -> None:
    ours, _ = servers
    written = ours.post(
        "/write-to-online-store",
        json={"feature_view_name": "restock", "df": {"item_id": ["3"], "qty": [4]}},
    )
    assert written.status_code == 200, written.text
    body = {"entities": {"item_id": [2, 1, 99, 3]}, "features": ["restock:twice"]}
    cols = columns(_both(servers, body))
    assert cols["twice"]["values"] == [14, 10, None, 8]
