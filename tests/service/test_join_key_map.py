"""Feature service projections with a join key map, ours against stock ``feast serve``.

``location_stats.with_name("origin").with_join_key_map({"location_id": "origin_id"})`` reads
``location_stats`` (the hash keyed by ``location_id``) for the location in the request
column ``origin_id``. Feast 0.67 reads each projection through its own map, echoes every
mapped column it is given, and names a projection's features after its alias. Where Feast
is wrong (a missing entity is ``PRESENT``; see ``differential_helpers.compare``) ours is
right; a view's features come back in set order in Feast, so only the views' order and
the echoed columns' order are compared exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from feast import FeatureStore

from online_store.embedded import EmbeddedRedis
from service.fastpath import OnlineFastPath
from tests.service.conftest import (
    AppClient,
    Repo,
    ServeProcess,
    columns,
    new_repo,
    ours_and_feast_serve,
)
from tests.service.differential_helpers import post_both

DEFINITIONS = """
from datetime import timedelta
import pandas as pd
from feast import (Entity, FeatureService, FeatureView, Field, FileSource, RequestSource,
                   ValueType)
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64

location = Entity(name="location", join_keys=["location_id"], value_type=ValueType.INT64)
rider = Entity(name="rider", join_keys=["rider_id"], value_type=ValueType.STRING)
location_stats = FeatureView(
    name="location_stats", entities=[location], ttl=timedelta(0),
    schema=[Field(name="temp", dtype=Float64), Field(name="rain", dtype=Int64)],
    source=FileSource(name="loc_src", path="data/loc.parquet", timestamp_field="event_timestamp"),
)
rider_loc = FeatureView(
    name="rider_loc", entities=[rider, location], ttl=timedelta(0),
    schema=[Field(name="visits", dtype=Int64)],
    source=FileSource(name="rl_src", path="data/rl.parquet", timestamp_field="event_timestamp"),
)
scale = RequestSource(name="scale", schema=[Field(name="k", dtype=Float64)])


@on_demand_feature_view(
    sources=[location_stats.with_join_key_map({"location_id": "origin_id"}), scale],
    schema=[Field(name="temp_k", dtype=Float64)], mode="pandas",
)
def origin_temp_k(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["temp_k"] = inputs["temp"] * inputs["k"]
    return out


trip = FeatureService(name="trip", features=[
    location_stats.with_name("origin").with_join_key_map({"location_id": "origin_id"}),
    location_stats.with_name("dest").with_join_key_map({"location_id": "dest_id"}),
    # two join keys, one of them mapped
    rider_loc.with_name("rider_dest").with_join_key_map({"location_id": "dest_id"}),
])
# Feast 0.67 cannot compare a service mixing aliased and unaliased projections (a
# TypeError sorting them), so each mixed service is all one or all the other.
mixed_aliased = FeatureService(name="mixed_aliased", features=[
    location_stats.with_name("here")[["rain"]],
    location_stats.with_name("origin").with_join_key_map({"location_id": "origin_id"})[["temp"]],
])
mixed_plain = FeatureService(name="mixed_plain", features=[
    rider_loc.with_join_key_map({"location_id": "dest_id"}),
    location_stats[["rain"]],
])
scaled = FeatureService(name="scaled", features=[origin_temp_k])
"""
TEMP = {1: 10.0, 2: 20.0, 3: 30.0}
VISITS = {("a", 1): 11, ("a", 3): 13, ("b", 1): 21}
MISSING = 99  # no location row


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, datetime]:
    """The repo's definitions and data (applied and materialized by ``servers``)."""
    path, when = new_repo(tmp_path_factory, "join-key-map", DEFINITIONS)
    stamps = pa.array([when] * 3, pa.timestamp("us", tz="UTC"))
    locations = {
        "location_id": pa.array(list(TEMP), pa.int64()),
        "event_timestamp": stamps,
        "temp": pa.array(list(TEMP.values()), pa.float64()),
        "rain": pa.array([1, 2, 3], pa.int64()),
    }
    pq.write_table(pa.table(locations), path / "data" / "loc.parquet")
    visits = {
        "rider_id": pa.array([r for r, _ in VISITS]),
        "location_id": pa.array([loc for _, loc in VISITS], pa.int64()),
        "event_timestamp": stamps,
        "visits": pa.array(list(VISITS.values()), pa.int64()),
    }
    pq.write_table(pa.table(visits), path / "data" / "rl.parquet")
    return path, when


@pytest.fixture(scope="module")
def servers(
    written: tuple[Path, datetime], service_redis: EmbeddedRedis
) -> Iterator[tuple[AppClient, httpx.Client]]:
    path, when = written
    with ours_and_feast_serve(path, project="jkm", redis_url=service_redis.url, when=when) as both:
        yield both


def _views(names: list[str]) -> list[str]:
    """The views of full feature names in response order (each once): Feast orders a
    view's own features by set iteration, which changes between processes."""
    return list(dict.fromkeys(name.partition("__")[0] for name in names))


def _both(servers: tuple[AppClient, httpx.Client], body: dict[str, Any]) -> dict[str, Any]:
    """Our answer, after checking it against feast serve's; the echoed columns and the
    views (or, without full names, the one-feature-a-view columns) in Feast's order."""
    mine, theirs = post_both(*servers, body)
    names = mine["metadata"]["feature_names"]
    feast_names = theirs["metadata"]["feature_names"]
    if body.get("full_feature_names"):
        assert _views(names) == _views(feast_names)
    else:
        assert names == feast_names
    meta = "feature_view_metadata"
    assert mine["metadata"].get(meta) == theirs["metadata"].get(meta)
    return mine


def test_two_projections_with_different_join_key_maps_match_feast_serve(
    servers: tuple[AppClient, httpx.Client],
) -> None:
    body = {
        "entities": {
            "origin_id": [1, 2, 3], "dest_id": [3, 1, MISSING], "rider_id": ["a", "b", "a"]
        },
        "feature_service": "trip",
        "full_feature_names": True,
        "include_feature_view_version_metadata": True,
    }  # fmt: skip
    got = _both(servers, body)
    names = got["metadata"]["feature_names"]
    assert names[:3] == ["origin_id", "dest_id", "rider_id"]
    assert _views(names[3:]) == ["origin", "dest", "rider_dest"]
    assert got["metadata"]["feature_view_metadata"] == [
        {"name": "origin"}, {"name": "dest"}, {"name": "rider_dest"}
    ]  # fmt: skip
    cols = columns(got)
    assert cols["origin__temp"]["values"] == [10.0, 20.0, 30.0]
    assert cols["dest__temp"]["values"] == [30.0, 10.0, None]
    assert cols["dest__temp"]["statuses"] == ["PRESENT", "PRESENT", "NOT_FOUND"]
    assert cols["dest__rain"]["values"] == [3, 1, None]
    # rider_id as given, location_id from dest_id: (a, 3), (b, 1), (a, 99)
    assert cols["rider_dest__visits"]["values"] == [13, 21, None]


def test_the_views_own_join_key_in_the_request_does_not_feed_a_mapped_projection(
    servers: tuple[AppClient, httpx.Client],
) -> None:
    """Given ``location_id`` too, Feast echoes it and still reads origin/dest from their
    columns (when it comes first: Feast lets a later ``location_id`` overwrite a mapped
    column, reading every projection from it; ours never does)."""
    body = {
        "entities": {
            "location_id": [2, 2], "origin_id": [1, 2], "dest_id": [3, 1], "rider_id": ["b", "a"]
        },
        "feature_service": "trip",
        "full_feature_names": True,
    }  # fmt: skip
    got = columns(_both(servers, body))
    assert list(got)[:4] == ["location_id", "origin_id", "dest_id", "rider_id"]
    assert got["origin__temp"]["values"] == [10.0, 20.0]
    assert got["dest__temp"]["values"] == [30.0, 10.0]
    entities = body["entities"]
    assert isinstance(entities, dict)
    last = {**{k: v for k, v in entities.items() if k != "location_id"}, "location_id": [2, 2]}
    ours, _ = servers
    resp = ours.post("/get-online-features", json={**body, "entities": last})
    assert resp.status_code == 200, resp.text
    again = columns(resp.json())
    assert again["origin__temp"]["values"] == [10.0, 20.0]
    assert again["dest__temp"]["values"] == [30.0, 10.0]
    assert again["rider_dest__visits"]["values"] == [None, 11]


@pytest.mark.parametrize("full_feature_names", [True, False])
@pytest.mark.parametrize(
    ("service", "entities", "expected"),
    [
        (
            "mixed_aliased",
            {"location_id": [3, 1], "origin_id": [1, MISSING]},
            {"rain": [3, 1], "temp": [10.0, None]},
        ),
        (
            "mixed_plain",
            {"location_id": [3, 1], "rider_id": ["a", "b"], "dest_id": [3, 3]},
            {"rain": [3, 1], "visits": [13, None]},
        ),
    ],
    ids=["aliased", "unaliased"],
)
def test_a_mapped_projection_next_to_an_unmapped_one_matches_feast_serve(
    servers: tuple[AppClient, httpx.Client],
    service: str,
    entities: dict[str, list[Any]],
    expected: dict[str, list[Any]],
    full_feature_names: bool,
) -> None:
    body = {"entities": entities, "feature_service": service}
    body["full_feature_names"] = full_feature_names
    body["include_feature_view_version_metadata"] = True
    got = _both(servers, body)
    assert got["metadata"]["feature_names"][: len(entities)] == list(entities)
    values = {
        name.rpartition("__")[2]: col["values"]
        for name, col in columns(got).items()
        if name not in entities
    }
    assert values == expected


@pytest.mark.parametrize("full_feature_names", [True, False])
@pytest.mark.parametrize("features", ["scaled", ["origin_temp_k:temp_k"]], ids=["service", "ref"])
def test_an_on_demand_view_over_a_mapped_source_matches_feast_serve(
    servers: tuple[AppClient, httpx.Client], features: str | list[str], full_feature_names: bool
) -> None:
    named = {"feature_service": features} if isinstance(features, str) else {"features": features}
    body = {
        **named,
        "entities": {"origin_id": [1, 3], "k": [2.0, 3.0]},
        "full_feature_names": full_feature_names,
    }
    got = columns(_both(servers, body))
    assert next(iter(got)) == "origin_id"
    name = "origin_temp_k__temp_k" if full_feature_names else "temp_k"
    assert got[name]["values"] == [20.0, 90.0]


@pytest.mark.parametrize(
    ("service", "entities", "missing"),
    [
        ("trip", {"origin_id": [1], "rider_id": ["a"]}, ["dest_id"]),
        # The view's own join key does not stand in for the mapped column.
        ("trip", {"location_id": [1], "dest_id": [1], "rider_id": ["a"]}, ["origin_id"]),
        ("scaled", {"location_id": [1], "k": [1.0]}, ["origin_id"]),
    ],
)
def test_a_missing_mapped_column_is_a_422_naming_it_and_the_map(
    servers: tuple[AppClient, httpx.Client],
    service: str,
    entities: dict[str, list[Any]],
    missing: list[str],
) -> None:
    ours, _ = servers
    body = {"entities": entities, "feature_service": service, "full_feature_names": True}
    resp = ours.post("/get-online-features", json=body)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_entity"
    assert error["missing"] == missing
    message = error["message"]
    # the column, the view's join key it stands for, and where the map comes from
    assert f"'{missing[0]}'" in message
    assert "'location_id'" in message
    assert "'location_stats'" in message


def test_a_wrong_type_in_a_mapped_column_is_a_422_naming_the_column(
    servers: tuple[AppClient, httpx.Client],
) -> None:
    ours, _ = servers
    body = {
        "entities": {"origin_id": [1], "dest_id": [True], "rider_id": ["a"]},
        "feature_service": "trip",
        "full_feature_names": True,
    }
    resp = ours.post("/get-online-features", json=body)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["join_key"] == "dest_id"
    assert "entity column 'dest_id'" in error["message"]
    assert "expects an integer" in error["message"]


TRIP = {"origin_id": [1, 2, 3], "dest_id": [3, 1, MISSING], "rider_id": ["a", "b", "a"]}


@pytest.mark.parametrize(
    "body",
    [
        {"entities": TRIP, "feature_service": "trip", "full_feature_names": True},
        {"entities": {"origin_id": [1]}, "feature_service": "trip", "full_feature_names": True},
    ],
    ids=["read", "missing-column"],
)
def test_the_lookup_shortcut_answers_mapped_projections_like_the_route(
    servers: tuple[AppClient, httpx.Client], body: dict[str, Any]
) -> None:
    """``featurestore serve`` answers lookups in front of FastAPI (service.fastpath)."""
    ours, _ = servers
    shortcut = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=OnlineFastPath(ours.app)), base_url="http://t"
    )
    try:
        quick = ours.run(shortcut.post("/get-online-features", json=body))
    finally:
        ours.run(shortcut.aclose())
    routed = ours.post("/get-online-features", json=body)
    assert (quick.status_code, quick.json()) == (routed.status_code, routed.json())
    if "dest_id" in body["entities"]:
        assert quick.status_code == 200, quick.text
        assert columns(quick.json())["dest__temp"]["values"] == [30.0, 10.0, None]
    else:
        assert quick.status_code == 422
        assert quick.json()["error"]["missing"] == ["dest_id", "rider_id"]


def test_feasts_remote_online_client_reads_a_mapped_service_like_the_in_process_sdk(
    servers: tuple[AppClient, httpx.Client],
    written: tuple[Path, datetime],
    service_redis: EmbeddedRedis,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Feast's ``online_store: type: remote`` posts the service's name to our server."""
    path, when = written
    registry_url = f"sqlite:///{path / 'data' / 'registry.db'}"
    repo = Repo(path=path, registry_url=registry_url, redis_url=service_redis.url, end=when)
    client_repo = tmp_path_factory.mktemp("jkm-remote-client")
    server = ServeProcess(repo, client_repo / "serve.log")
    try:
        config = {
            "project": "jkm",
            "provider": "local",
            "registry": {"registry_type": "sql", "path": registry_url, "cache_ttl_seconds": 1},
            "online_store": {"type": "remote", "path": server.url},
            "entity_key_serialization_version": 3,
        }
        (client_repo / "feature_store.yaml").write_text(yaml.safe_dump(config))
        rows = [dict(zip(TRIP, row, strict=True)) for row in zip(*TRIP.values(), strict=True)]
        with pytest.MonkeyPatch.context() as env:
            for name in [k for k in os.environ if k.startswith("FEATURESTORE_")]:
                env.delenv(name)
            env.setenv("FEATURESTORE_REDIS_URL", repo.redis_url)
            env.setenv("FEATURESTORE_REGISTRY_URL", repo.registry_url)
            answers = [
                store.get_online_features(
                    features=store.get_feature_service("trip"),
                    entity_rows=rows,
                    full_feature_names=True,
                ).to_dict()
                for store in (FeatureStore(str(client_repo)), FeatureStore(str(path)))
            ]
    finally:
        server.stop()
    remote, in_process = answers
    assert remote == in_process
    assert remote["origin__temp"] == [10.0, 20.0, 30.0]
    assert remote["dest__temp"] == [30.0, 10.0, None]
    assert remote["rider_dest__visits"] == [13, 21, None]
