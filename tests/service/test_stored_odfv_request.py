"""A stored on-demand view (``write_to_online_store=True``) with request data: the
transformation runs once, when ``POST /write-to-online-store`` gets its inputs and the
request data; lookups read what was stored, with or without request data, as `feast serve`
does (compared on one registry and Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from online_store.embedded import EmbeddedRedis
from tests.service.conftest import AppClient, columns, new_repo, ours_and_feast_serve
from tests.service.test_stored_odfv import SALES
from tests.service.write_helpers import write_online

DEFINITIONS = (
    SALES
    + """
from feast import RequestSource

quote = RequestSource(name="quote", schema=[Field(name="discount", dtype=Float64)])


@on_demand_feature_view(
    sources=[sales, quote], entities=[shop], write_to_online_store=True, mode="pandas",
    schema=[Field(name="net", dtype=Float64)],
)
def net_revenue(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["net"] = inputs["units"] * inputs["price"] * (1.0 - inputs["discount"])
    return out
"""
)


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, service_redis: EmbeddedRedis
) -> Iterator[tuple[AppClient, httpx.Client]]:
    path, when = new_repo(tmp_path_factory, "stored-odfv-request", DEFINITIONS)
    table = {
        "shop_id": pa.array(["s1", "s2"]),
        # Before the fixture's materialize window: Feast's own materialize runs the view's
        # transformation without request data (a KeyError, stock Feast alike).
        "event_timestamp": pa.array([when - timedelta(days=2)] * 2, pa.timestamp("us", tz="UTC")),
        "units": pa.array([10, 3], pa.int64()),
        "price": pa.array([12.5, 2.0]),
    }
    pq.write_table(pa.table(table), Path(path) / "data" / "sales.parquet")
    with ours_and_feast_serve(
        path, project="storedreq", redis_url=service_redis.url, when=when
    ) as both:
        yield both


def _net(answer: dict[str, Any]) -> dict[str, list[Any]]:
    return columns(answer)["net"]


def test_written_with_its_request_data_and_read_with_or_without_it(
    servers: tuple[AppClient, httpx.Client],
) -> None:
    """The transformation runs once, at the write, on the request data sent with it; a
    lookup reads what was stored whether it sends request data or not, as `feast serve`
    does (neither runs the transformation again)."""
    ours, feast = servers
    inputs = {"units": [4, 2], "price": [10.0, 5.0], "discount": [0.25, 0.0]}
    resp = write_online(ours, "net_revenue", {"shop_id": ["w1", "w2"], **inputs})
    assert resp.status_code == 200, resp.text
    assert resp.json()["written"] == 2
    for entities in (
        {"shop_id": ["w1", "w2", "s1"], "discount": [0.5, 0.5, 0.5]},
        {"shop_id": ["w1", "w2", "s1"]},
    ):
        body = {"entities": entities, "features": ["net_revenue:net"]}
        mine = ours.post("/get-online-features", json=body).json()
        theirs = feast.post("/get-online-features", json=body).json()
        assert _net(mine)["values"] == _net(theirs)["values"] == [30.0, 10.0, None]
        assert _net(mine)["event_timestamps"] == _net(theirs)["event_timestamps"]
        # Nothing stored for s1: NOT_FOUND here; feast serve says PRESENT (with a null)
        # for a view with request data, NOT_FOUND for one without.
        assert _net(mine)["statuses"] == ["PRESENT", "PRESENT", "NOT_FOUND"]


def test_a_write_without_the_request_data_is_a_422_naming_it_and_writes_nothing(
    servers: tuple[AppClient, httpx.Client],
) -> None:
    ours, _ = servers
    resp = write_online(ours, "net_revenue", {"shop_id": ["w9"], "units": [4], "price": [10.0]})
    assert resp.status_code == 422, resp.text
    assert "discount" in resp.text
    body = {"entities": {"shop_id": ["w9"]}, "features": ["net_revenue:net"]}
    read = ours.post("/get-online-features", json=body).json()
    assert _net(read)["statuses"] == ["NOT_FOUND"]
