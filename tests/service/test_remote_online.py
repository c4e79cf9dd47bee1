"""Feast's ``online_store: type: remote`` client against a live ``featurestore serve``.

A client repo shares the registry and points its online store at our server; its
``FeatureStore.get_online_features`` must give the values the in-process store (our
plugins, reading Redis directly) gives: a features list, a feature service with
request data, missing entities and entities past the view's TTL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import yaml
from feast import FeatureStore
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

from tests.service.conftest import Repo, ServeProcess

STALE = 910_201
MISSING = 4_000_000_201


@pytest.fixture(scope="module")
def server(repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    proc = ServeProcess(repo, tmp_path_factory.mktemp("remote-online") / "serve.log")
    try:
        when = (datetime.now(UTC) - timedelta(days=3)).isoformat()
        resp = httpx.post(
            f"{proc.url}/write-to-online-store",
            json={
                "feature_view_name": "driver_hourly_stats",
                "df": {
                    "driver_id": [STALE], "event_timestamp": [when], "created": [when],
                    "conv_rate": [0.5], "acc_rate": [0.25], "avg_daily_trips": [9],
                    "avg_rating": [4.5], "surge_multiplier": [2.0], "is_active": [False],
                },
            },
            timeout=30,
        )  # fmt: skip
        assert resp.status_code == 200, resp.text
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def stores(
    repo: Repo, server: ServeProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FeatureStore, FeatureStore]]:
    client_repo = tmp_path_factory.mktemp("remote-client")
    config = {
        "project": "rides",
        "provider": "local",
        "registry": {"registry_type": "sql", "path": repo.registry_url, "cache_ttl_seconds": 1},
        "online_store": {"type": "remote", "path": server.url},
        "entity_key_serialization_version": 3,
    }
    (client_repo / "feature_store.yaml").write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as env:
        for name in [k for k in os.environ if k.startswith("FEATURESTORE_")]:
            env.delenv(name)
        env.setenv("FEATURESTORE_REDIS_URL", repo.redis_url)
        env.setenv("FEATURESTORE_REGISTRY_URL", repo.registry_url)
        yield FeatureStore(repo_path=str(client_repo)), FeatureStore(repo_path=str(repo.path))


def _both(
    stores: tuple[FeatureStore, FeatureStore],
    features: Any,
    rows: list[dict[str, Any]],
    *,
    stale_rows: frozenset[int] = frozenset(),
) -> dict[str, list[Any]]:
    """The remote client's answer, checked against the in-process store's.

    Equal, except where Feast's SDK is wrong or its remote client lossy: values past
    the view's TTL (``stale_rows`` for driver_hourly_stats) are null and
    ``OUTSIDE_MAX_AGE`` remotely (the SDK returns them as present, Feast #6821), and a
    unix timestamp comes back as epoch seconds (the remote client reads JSON numbers as
    int64; ``feast serve`` sends the same JSON).
    """
    remote, local = stores
    response = remote.get_online_features(features=features, entity_rows=rows)
    theirs = response.to_dict()
    ours = local.get_online_features(features=features, entity_rows=rows).to_dict()
    stale_columns = {"conv_rate", "avg_daily_trips", "is_active", "acc_rate", "avg_rating",
                     "surge_multiplier"}  # fmt: skip
    expected: dict[str, list[Any]] = {}
    for name, values in ours.items():
        expected[name] = [
            None
            if j in stale_rows and name in stale_columns
            else int(v.timestamp())
            if isinstance(v, datetime)
            else v
            for j, v in enumerate(values)
        ]
    assert theirs == expected
    names = list(response.proto.metadata.feature_names.val)
    for j in stale_rows:
        status = response.proto.results[names.index("conv_rate")].statuses[j]
        assert FieldStatus.Name(status) == "OUTSIDE_MAX_AGE"
    return theirs


def _drivers(repo: Repo, n: int) -> list[int]:
    return sorted({k[0] for k in repo.latest("driver_stats", ["driver_id"])})[:n]


def test_remote_client_reads_a_features_list_like_the_in_process_store(
    stores: tuple[FeatureStore, FeatureStore], repo: Repo
) -> None:
    ids = [*_drivers(repo, 10), MISSING, STALE]
    pairs = sorted(repo.latest("driver_customer_stats", ["driver_id", "customer_id"]))[:12]
    rows = [{"driver_id": d, "customer_id": c} for d, (_, c) in zip(ids, pairs, strict=True)]
    rows[-2]["customer_id"] = "c_missing"
    out = _both(
        stores,
        [
            "driver_hourly_stats:conv_rate",
            "driver_hourly_stats:avg_daily_trips",
            "driver_hourly_stats:is_active",
            "customer_profile:membership_tier",
            "customer_profile:signup_ts",
        ],
        rows,
        stale_rows=frozenset({len(rows) - 1}),
    )
    assert out["driver_id"] == ids
    assert out["conv_rate"][-2] is None  # missing entity
    assert out["conv_rate"][-1] is None  # past the view's TTL
    assert out["membership_tier"][-2] is None
    assert sum(v is not None for v in out["conv_rate"]) >= 5
    assert sum(v is not None for v in out["membership_tier"]) >= 5


def test_remote_client_reads_a_feature_service_like_the_in_process_store(
    stores: tuple[FeatureStore, FeatureStore], repo: Repo
) -> None:
    pairs = sorted(repo.latest("driver_customer_stats", ["driver_id", "customer_id"]))[:8]
    rows = [
        {"driver_id": d, "customer_id": c, "distance_km": 2.0 + i, "duration_min": 10.0}
        for i, (d, c) in enumerate(pairs)
    ]
    rows.append(
        {"driver_id": MISSING, "customer_id": "c_missing", "distance_km": 1.0, "duration_min": 5.0}
    )
    service = stores[1].get_feature_service("ride_ranking_v1")
    out = _both(stores, service, rows)
    assert len(out["estimated_fare"]) == len(rows)
    assert sum(v is not None for v in out["conv_rate"]) >= 4


def test_remote_client_sends_our_api_key_as_feast_token(
    repo: Repo, read_key: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    proc = ServeProcess(repo, tmp_path_factory.mktemp("remote-auth") / "serve.log", "--auth")
    try:
        stores = []
        for key in (read_key, "fsk_000000000000_wrong"):
            client_repo = tmp_path_factory.mktemp("remote-auth-client")
            config = {
                "project": "rides",
                "provider": "local",
                "registry": {"registry_type": "sql", "path": repo.registry_url},
                "online_store": {"type": "remote", "path": proc.url},
                "auth": {"type": "kubernetes", "user_token": key},
                "entity_key_serialization_version": 3,
            }
            (client_repo / "feature_store.yaml").write_text(yaml.safe_dump(config))
            stores.append(FeatureStore(repo_path=str(client_repo)))
        good, bad = stores
        ids = _drivers(repo, 3)
        rows = [{"driver_id": d} for d in ids]
        out = good.get_online_features(
            features=["driver_hourly_stats:conv_rate"], entity_rows=rows
        ).to_dict()
        assert out["driver_id"] == ids
        assert all(v is not None for v in out["conv_rate"])
        with pytest.raises(RuntimeError, match="401"):
            bad.get_online_features(features=["driver_hourly_stats:conv_rate"], entity_rows=rows)
    finally:
        proc.stop()
