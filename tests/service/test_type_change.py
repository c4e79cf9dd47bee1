"""A feature whose declared type changed after its values were written reads back as stored.

``feast apply`` accepts a new dtype for an existing feature without touching Redis, so
until the next materialization the stored values keep their old type. The JSON encoder
followed the declared type (base64 for Bytes, float rules for Float64 and lists), so a
String value under a now-Bytes feature, a Float64 under a now-Array one, or Bytes under a
now-String one answered 500. ``feast serve`` renders each value by its stored type.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from online_store.embedded import EmbeddedRedis
from tests.service.conftest import AppClient, columns, feast_cli, new_repo, ours_and_feast_serve
from tests.service.differential_helpers import post_both

BEFORE = {"label": "String", "blob": "Bytes", "score": "Float64", "tags": "Array(String)"}
AFTER = {"label": "Bytes", "blob": "String", "score": "Array(Float64)", "tags": "Float64"}


def _definitions(types: dict[str, str]) -> str:
    fields = ", ".join(f'Field(name="{name}", dtype={dtype})' for name, dtype in types.items())
    return f"""
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Bytes, Float64, String

item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)
items = FeatureView(
    name="items", entities=[item], ttl=timedelta(0), schema=[{fields}],
    source=FileSource(name="items_src", path="data/items.parquet",
                      timestamp_field="event_timestamp"),
)
"""


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, service_redis: EmbeddedRedis
) -> Iterator[tuple[AppClient, httpx.Client, Path]]:
    path, when = new_repo(tmp_path_factory, "type-change", _definitions(BEFORE))
    table = {
        "item_id": pa.array([1, 2], pa.int64()),
        "event_timestamp": pa.array([when] * 2, pa.timestamp("us", tz="UTC")),
        "label": pa.array(["abc", None]),
        "blob": pa.array([b"\x00\xffraw", b""], pa.binary()),
        "score": pa.array([1.5, 0.5]),
        "tags": pa.array([["a", "b"], []], pa.list_(pa.string())),
    }
    pq.write_table(pa.table(table), path / "data" / "items.parquet")
    with ours_and_feast_serve(
        path, project="typechange", redis_url=service_redis.url, when=when
    ) as (ours, feast):
        yield ours, feast, path


def test_values_read_as_stored_after_the_declared_type_changed(
    servers: tuple[AppClient, httpx.Client, Path], service_redis: EmbeddedRedis
) -> None:
    ours, feast, path = servers
    body: dict[str, Any] = {"entities": {"item_id": [1, 2, 3]}, "features": [
        f"items:{name}" for name in BEFORE
    ]}  # fmt: skip
    before = ours.post("/get-online-features", json=body)
    assert before.status_code == 200, before.text

    (path / "definitions.py").write_text(_definitions(AFTER))
    registry_url = f"sqlite:///{path / 'data' / 'registry.db'}"
    feast_cli(path, service_redis.url, registry_url, "apply")
    deadline = time.monotonic() + 30
    while ours.get("/registry/feature-views/items").json()["features"][0]["dtype"] != "Bytes":
        assert time.monotonic() < deadline, "the service never saw the new types"
        time.sleep(0.2)
    time.sleep(1.5)  # feast serve's registry cache (1 s)

    mine, _ = post_both(ours, feast, body)
    # The stored values, rendered as before the change.
    assert mine["results"] == before.json()["results"]
    cols = columns(mine)
    assert cols["label"]["values"] == ["abc", None, None]
    assert cols["blob"]["values"][0] == "AP9yYXc="  # base64 of the stored bytes
    assert cols["score"]["values"][:2] == [1.5, 0.5]
    assert cols["tags"]["values"][:2] == [["a", "b"], []]
