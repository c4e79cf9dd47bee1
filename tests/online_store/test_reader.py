"""ReadPlan: statuses, TTL, entity validation, dedupe and one round trip, sync == async."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
import redis
import redis.asyncio
from feast.value_type import ValueType

from foundation.errors import InvalidEntityError
from online_store.reader import (
    NOT_FOUND,
    NULL_VALUE,
    OUTSIDE_MAX_AGE,
    PRESENT,
    ReadPlan,
    ViewReadSpec,
)
from online_store.writer import write_arrow
from tests.online_store.views import INT, T0, driver_view, rows


def _spec(
    name: str = "stats", ttl: int = 0, features: tuple[str, ...] = ("rate", "label")
) -> ViewReadSpec:
    return ViewReadSpec(name, ("driver_id",), INT, features, ttl * 1_000_000)


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    c = redis.Redis.from_url(redis_url)
    write_arrow(
        c,
        driver_view(),
        rows((1, 0.5, "a", T0), (2, None, None, T0 - timedelta(hours=2))),
        project="p",
    )
    return c


def test_statuses_present_null_and_not_found(client: redis.Redis) -> None:
    plan = ReadPlan.compile("p", [_spec()])
    result = plan.read(client, {"driver_id": [1, 2, 3]}, now=T0)
    rate = result.columns["stats:rate"]
    assert rate.values == [0.5, None, None]
    assert rate.statuses == [PRESENT, NULL_VALUE, NOT_FOUND]
    assert rate.event_timestamps == [T0, T0 - timedelta(hours=2), None]
    assert result.columns["stats:label"].values == ["a", None, None]


def test_online_read_past_ttl_is_outside_max_age(client: redis.Redis) -> None:
    plan = ReadPlan.compile("p", [_spec(ttl=3600)])
    result = plan.read(client, {"driver_id": [1, 2]}, now=T0 + timedelta(minutes=30))
    assert result.columns["stats:rate"].statuses == [PRESENT, OUTSIDE_MAX_AGE]
    assert result.columns["stats:rate"].values == [0.5, None]
    # Exactly at the TTL boundary is still fresh (now - ts > ttl is stale).
    edge = plan.read(client, {"driver_id": [1]}, now=T0 + timedelta(hours=1))
    assert edge.columns["stats:rate"].statuses == [PRESENT]


def test_ttl_zero_never_expires(client: redis.Redis) -> None:
    plan = ReadPlan.compile("p", [_spec(ttl=0)])
    result = plan.read(client, {"driver_id": [2]}, now=T0 + timedelta(days=3650))
    assert result.columns["stats:rate"].statuses == [NULL_VALUE]


class CountingRedis(redis.Redis):
    """Counts pipelines executed (round trips) on a real connection."""

    round_trips = 0

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        type(self).round_trips += 1
        return super().pipeline(transaction, shard_hint)


def test_views_sharing_join_keys_share_one_hmget_per_unique_entity(redis_url: str) -> None:
    base = redis.Redis.from_url(redis_url)
    write_arrow(base, driver_view("a"), rows((1, 1.0, "x", T0)), project="p")
    write_arrow(base, driver_view("b"), rows((1, 2.0, "y", T0)), project="p")
    base.config_resetstat()
    client = CountingRedis.from_url(redis_url)
    CountingRedis.round_trips = 0
    plan = ReadPlan.compile("p", [_spec("a"), _spec("b", features=("label",))])
    result = plan.read(client, {"driver_id": [1, 1, 7, 1]})
    assert CountingRedis.round_trips == 1
    stats = base.info("commandstats")
    assert stats["cmdstat_hmget"]["calls"] == 2  # entities 1 and 7, both views in one HMGET
    assert result.columns["a:rate"].values == [1.0, 1.0, None, 1.0]
    assert result.columns["b:label"].values == ["y", "y", None, "y"]


def test_async_read_equals_sync_read(client: redis.Redis, redis_url: str) -> None:
    plan = ReadPlan.compile("p", [_spec(ttl=3600)])
    entities = {"driver_id": [1, 2, 3, 1]}
    sync = plan.read(client, entities, now=T0)

    async def go() -> Any:
        aclient = redis.asyncio.Redis.from_url(redis_url)
        try:
            return await plan.read_async(aclient, entities, now=T0)
        finally:
            await aclient.aclose()

    assert asyncio.run(go()) == sync


@pytest.mark.parametrize(
    ("entities", "message"),
    [
        ({"rider": [1]}, "join key 'driver_id' is missing"),
        ({"driver_id": ["abc"]}, "'driver_id' expects an integer"),
        ({"driver_id": [True]}, "'driver_id' expects an integer"),
        ({"driver_id": [2**63]}, "out of range"),
        ({"driver_id": [1, 2], "other": [1]}, "different lengths"),
    ],
)
def test_bad_entities_raise_invalid_entity_naming_the_key(
    client: redis.Redis, entities: dict[str, list[Any]], message: str
) -> None:
    plan = ReadPlan.compile("p", [_spec()])
    with pytest.raises(InvalidEntityError, match=message):
        plan.read(client, entities)


def test_string_key_rejects_numbers(redis_url: str) -> None:
    plan = ReadPlan.compile("p", [ViewReadSpec("v", ("rider",), (ValueType.STRING,), ("f",), 0)])
    with pytest.raises(InvalidEntityError, match="'rider' expects a string"):
        plan.read(redis.Redis.from_url(redis_url), {"rider": [5]})


def test_feature_added_after_write_is_not_found_while_others_present(client: redis.Redis) -> None:
    plan = ReadPlan.compile("p", [_spec(features=("rate", "new_feature"))])
    result = plan.read(client, {"driver_id": [1]})
    assert result.columns["stats:rate"].statuses == [PRESENT]
    assert result.columns["stats:new_feature"].statuses == [NOT_FOUND]
    assert result.columns["stats:new_feature"].event_timestamps == [None]


def test_entity_less_view_uses_feasts_empty_entity_key(redis_url: str) -> None:
    import pyarrow as pa
    from feast import FeatureView, Field, FileSource
    from feast.types import Float64

    view = FeatureView(
        name="global_stats",
        entities=[],
        schema=[Field(name="rate", dtype=Float64)],
        source=FileSource(path="unused.parquet", timestamp_field="event_ts"),
    )
    client = redis.Redis.from_url(redis_url)
    table = pa.table({"rate": [1.5, 2.5], "event_ts": pa.array([T0, T0 + timedelta(1)])})
    write_arrow(client, view, table, project="p")
    assert client.keys() == [b"\x00\x00\x00\x00p"]
    plan = ReadPlan.compile("p", [ViewReadSpec("global_stats", (), (), ("rate",), 0)])
    assert plan.read(client, {}).columns["global_stats:rate"].values == []
    assert plan.read(client, {"unused": [0, 0]}).columns["global_stats:rate"].values == [2.5, 2.5]
