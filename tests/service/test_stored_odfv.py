"""On-demand views with ``write_to_online_store=True`` are read from Redis, like Feast.

``feast materialize`` runs such a view's transformation over its sources and stores the
outputs under the view's entities; ``feast serve`` then reads them back instead of running
the transformation (no request data needed). The service refused them with a 422.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from online_store.embedded import EmbeddedRedis
from tests.service.conftest import AppClient, columns, new_repo, ours_and_feast_serve
from tests.service.differential_helpers import post_both

DEFINITIONS = """
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


@on_demand_feature_view(
    sources=[sales], entities=[shop], write_to_online_store=True, mode="pandas",
    schema=[Field(name="revenue", dtype=Float64), Field(name="band", dtype=String)],
)
def revenue(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["revenue"] = inputs["units"] * inputs["price"]
    out["band"] = ["high" if r > 100 else "low" for r in out["revenue"]]
    return out


shop_service = FeatureService(name="shop_service", features=[sales[["units"]], revenue])
"""
UNITS = {"s1": 10, "s2": 3}
PRICE = {"s1": 12.5, "s2": 2.0}


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, service_redis: EmbeddedRedis
) -> Iterator[tuple[AppClient, httpx.Client]]:
    path, when = new_repo(tmp_path_factory, "stored-odfv", DEFINITIONS)
    table = {
        "shop_id": pa.array(list(UNITS)),
        "event_timestamp": pa.array([when] * len(UNITS), pa.timestamp("us", tz="UTC")),
        "units": pa.array(list(UNITS.values()), pa.int64()),
        "price": pa.array(list(PRICE.values())),
    }
    pq.write_table(pa.table(table), Path(path) / "data" / "sales.parquet")
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


def test_writing_an_on_demand_view_over_http_says_where_its_values_come_from(
    servers: tuple[AppClient, httpx.Client],
) -> None:
    ours, _ = servers
    df = {"shop_id": ["s9"], "event_timestamp": ["2026-01-01T00:00:00Z"], "revenue": [1.0]}
    resp = ours.post("/write-to-online-store", json={"feature_view_name": "revenue", "df": df})
    assert resp.status_code == 422, resp.text
    message = resp.json()["error"]["message"]
    assert "on-demand feature view" in message
    assert "feast materialize" in message
