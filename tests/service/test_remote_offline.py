"""Feast's ``offline_store: type: remote`` client against ``featurestore serve-offline``.

The client repo shares the registry, points its offline store at our Arrow Flight server
and carries one of our API keys the way Feast's remote clients send tokens
(``auth: {type: kubernetes, user_token: <key>}`` -> ``authorization: Bearer <key>``).
Its ``get_historical_features`` must equal the in-process DuckDB join, for uploaded
entity rows and for entity SQL; a bad key is refused.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.flight as fl
import pytest
import sqlalchemy as sa
import yaml
from feast import FeatureStore
from feast.infra.offline_stores.file_source import SavedDatasetFileStorage

from online_store.embedded import free_port
from service.auth import KeyStore, Scope, open_key_engine
from tests.service.conftest import ROOT, Repo

FEATURES = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:avg_daily_trips",
    "customer_profile:membership_tier",
    "customer_profile:signup_ts",
    "driver_customer_stats:avg_tip",
]


@pytest.fixture(scope="module")
def flight_port(repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    log = tmp_path_factory.mktemp("serve-offline") / "serve-offline.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTORE_")}
    env.update(
        PYTHONPATH=str(ROOT),
        FEATURESTORE_REDIS_URL=repo.redis_url,
        FEATURESTORE_REGISTRY_URL=repo.registry_url,
        FEATURESTORE_TRAINING_MAX_CONCURRENT="2",
    )
    cmd = [sys.executable, "-m", "service.cli", "serve-offline", "--repo", str(repo.path)]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), "--auth"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _client_repo(path: Path, repo: Repo, port: int, key: str) -> FeatureStore:
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "project": "rides",
        "provider": "local",
        "registry": {"registry_type": "sql", "path": repo.registry_url, "cache_ttl_seconds": 1},
        "online_store": {"type": "sqlite", "path": str(path / "online.db")},
        "offline_store": {"type": "remote", "host": "127.0.0.1", "port": port},
        "auth": {"type": "kubernetes", "user_token": key},
        "entity_key_serialization_version": 3,
    }
    (path / "feature_store.yaml").write_text(yaml.safe_dump(config))
    return FeatureStore(repo_path=str(path))


@pytest.fixture(scope="module")
def local(repo: Repo) -> Iterator[FeatureStore]:
    with pytest.MonkeyPatch.context() as env:
        for name in [k for k in os.environ if k.startswith("FEATURESTORE_")]:
            env.delenv(name)
        env.setenv("FEATURESTORE_REDIS_URL", repo.redis_url)
        env.setenv("FEATURESTORE_REGISTRY_URL", repo.registry_url)
        yield FeatureStore(repo_path=str(repo.path))


@pytest.fixture(scope="module")
def remote(
    repo: Repo, flight_port: int, read_key: str, tmp_path_factory: pytest.TempPathFactory
) -> FeatureStore:
    return _client_repo(tmp_path_factory.mktemp("client"), repo, flight_port, read_key)


def _entities(repo: Repo) -> pd.DataFrame:
    pairs = sorted(repo.latest("driver_customer_stats", ["driver_id", "customer_id"]))[:40]
    times = [repo.end - timedelta(hours=3 * i) for i in range(len(pairs))]
    frame = pd.DataFrame(
        {
            "driver_id": [d for d, _ in pairs] + [4_000_000_301],
            "customer_id": [c for _, c in pairs] + ["c_missing"],
            "event_timestamp": [*times, repo.end],
            "label": list(range(len(pairs) + 1)),
        }
    )
    # a duplicate entity row stays (once per input row)
    return pd.concat([frame, frame.iloc[[0]]], ignore_index=True)


def _equal(theirs: pd.DataFrame, ours: pd.DataFrame) -> None:
    assert list(theirs.columns) == list(ours.columns)
    assert len(theirs) == len(ours)
    pd.testing.assert_frame_equal(theirs, ours)


@pytest.mark.parametrize("full_feature_names", [False, True])
def test_remote_historical_features_equal_the_in_process_join(
    remote: FeatureStore, local: FeatureStore, repo: Repo, full_feature_names: bool
) -> None:
    entities = _entities(repo)
    theirs = remote.get_historical_features(
        entity_df=entities, features=FEATURES, full_feature_names=full_feature_names
    ).to_df()
    ours = local.get_historical_features(
        entity_df=entities, features=FEATURES, full_feature_names=full_feature_names
    ).to_df()
    _equal(theirs, ours)
    conv = "driver_hourly_stats__conv_rate" if full_feature_names else "conv_rate"
    assert theirs[conv].notna().sum() >= 10
    assert theirs["label"].tolist() == entities["label"].tolist()


def test_remote_feature_service_with_on_demand_view_equals_the_in_process_join(
    remote: FeatureStore, local: FeatureStore, repo: Repo
) -> None:
    entities = _entities(repo).assign(distance_km=4.0, duration_min=12.5)
    service = local.get_feature_service("ride_ranking_v1")
    theirs = remote.get_historical_features(entity_df=entities, features=service).to_df()
    ours = local.get_historical_features(entity_df=entities, features=service).to_df()
    _equal(theirs, ours)
    assert theirs["estimated_fare"].notna().sum() >= 10


def test_remote_entity_sql_runs_in_the_sandbox(
    remote: FeatureStore, local: FeatureStore, repo: Repo
) -> None:
    sql = (
        "SELECT driver_id, event_timestamp FROM driver_hourly_stats "
        "ORDER BY event_timestamp DESC, driver_id LIMIT 25"
    )
    theirs = remote.get_historical_features(entity_df=sql, features=FEATURES[:2]).to_df()
    ours = local.get_historical_features(entity_df=sql, features=FEATURES[:2]).to_df()
    _equal(theirs, ours)
    assert len(theirs) == 25
    outside = "SELECT * FROM read_parquet('/etc/passwd')"
    with pytest.raises(pa.ArrowInvalid, match=r"read_parquet|not allowed|refused"):
        remote.get_historical_features(entity_df=outside, features=FEATURES[:1]).to_df()


def test_unknown_feature_is_a_clear_error(remote: FeatureStore, repo: Repo) -> None:
    with pytest.raises(Exception, match="speed"):
        remote.get_historical_features(
            entity_df=_entities(repo), features=["driver_hourly_stats:speed"]
        ).to_df()


@pytest.mark.parametrize("key", ["fsk_000000000000_not-a-real-secret", "garbage"])
def test_a_bad_key_is_refused(
    repo: Repo, flight_port: int, key: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    store = _client_repo(tmp_path_factory.mktemp("bad-key"), repo, flight_port, key)
    with pytest.raises(fl.FlightUnauthenticatedError, match="API key"):
        store.get_historical_features(entity_df=_entities(repo), features=FEATURES).to_df()


def _exchange_without_key(port: int) -> pa.Table:
    client = fl.connect(f"grpc+tcp://127.0.0.1:{port}")
    descriptor = fl.FlightDescriptor.for_command(
        b'{"api": "get_historical_features", "feature_refs": ["driver_hourly_stats:conv_rate"]}'
    )
    writer, reader = client.do_exchange(descriptor)
    table: Any = pa.table({"driver_id": [1]})
    writer.begin(table.schema)
    writer.write_table(table)
    writer.done_writing()
    return reader.read_all()


def test_no_key_is_refused(flight_port: int) -> None:
    with pytest.raises(fl.FlightUnauthenticatedError, match="missing API key"):
        _exchange_without_key(flight_port)


@pytest.fixture(scope="module")
def writer(repo: Repo, flight_port: int, tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    """A client repo carrying a key of scope ``write`` (saving datasets writes files)."""
    engine: sa.Engine = open_key_engine(repo.registry_url, 5)
    try:
        key = KeyStore(engine, project="rides").create(Scope.WRITE, name="remote-writer")
    finally:
        engine.dispose()
    # The server re-reads its key snapshot for an unknown key at most once a second
    # (service/auth.py): a key made now is served within a second.
    time.sleep(1.1)
    return _client_repo(tmp_path_factory.mktemp("writer"), repo, flight_port, key)


SAVE_WARNING = "ignore:Saving dataset is an experimental feature:RuntimeWarning"


@pytest.mark.filterwarnings(SAVE_WARNING)
def test_a_dataset_saved_remotely_reads_back_remotely_and_in_process(
    writer: FeatureStore, local: FeatureStore, repo: Repo
) -> None:
    """``create_saved_dataset`` from a remote client writes under the server repo's data/;
    ``get_saved_dataset(...).to_df()`` from the client and from the server give its rows."""
    entities = _entities(repo)
    name = f"remote_save_{time.monotonic_ns()}"
    relative = f"data/saved/{name}.parquet"
    job = writer.get_historical_features(entity_df=entities, features=FEATURES)
    writer.create_saved_dataset(
        from_=job, name=name, storage=SavedDatasetFileStorage(path=relative)
    )
    written = repo.path / relative
    assert written.is_file()
    joined = local.get_historical_features(entity_df=entities, features=FEATURES).to_df()
    # The file keeps DuckDB's microsecond timestamps (as a local save's COPY writes them).
    on_disk = pd.read_parquet(written).astype(
        {c: joined[c].dtype for c in joined.columns if str(joined[c].dtype).startswith("datetime")}
    )
    _equal(on_disk[list(joined.columns)].reset_index(drop=True), joined.reset_index(drop=True))
    remote_rows = writer.get_saved_dataset(name).to_df()
    local_rows = local.get_saved_dataset(name).to_df()
    key = list(local_rows.columns)
    _equal(
        remote_rows.sort_values(key).reset_index(drop=True),
        local_rows.sort_values(key).reset_index(drop=True),
    )
    assert len(remote_rows) == len(entities)


@pytest.mark.filterwarnings(SAVE_WARNING)
def test_saving_remotely_needs_a_write_key(remote: FeatureStore, repo: Repo) -> None:
    job = remote.get_historical_features(entity_df=_entities(repo), features=FEATURES[:1])
    with pytest.raises(fl.FlightUnauthorizedError, match="scope"):
        remote.create_saved_dataset(
            from_=job,
            name="read_key_save",
            storage=SavedDatasetFileStorage(path="data/saved/read_key_save.parquet"),
        )
    assert not (repo.path / "data" / "saved" / "read_key_save.parquet").exists()


@pytest.mark.filterwarnings(SAVE_WARNING)
@pytest.mark.parametrize("where", ["outside", "dotdot", "not-parquet"])
def test_a_save_path_outside_the_repo_data_is_refused(
    writer: FeatureStore, repo: Repo, tmp_path: Path, where: str
) -> None:
    target = {
        "outside": str(tmp_path / "saved.parquet"),
        "dotdot": "data/../escaped.parquet",
        "not-parquet": "data/saved/notes.txt",
    }[where]
    job = writer.get_historical_features(entity_df=_entities(repo), features=FEATURES[:1])
    with pytest.raises(pa.ArrowInvalid, match="refused"):
        writer.create_saved_dataset(
            from_=job, name=f"bad_{where}", storage=SavedDatasetFileStorage(path=target)
        )
    assert not (tmp_path / "saved.parquet").exists()
    assert not (repo.path / "escaped.parquet").exists()
    assert not (repo.path / "data" / "saved" / "notes.txt").exists()


def test_entity_frame_with_a_filtered_index_equals_the_in_process_join(
    remote: FeatureStore, local: FeatureStore, repo: Repo
) -> None:
    entities = _entities(repo).iloc[::3]  # the index is no longer a RangeIndex
    theirs = remote.get_historical_features(entity_df=entities, features=FEATURES[:2]).to_df()
    ours = local.get_historical_features(entity_df=entities, features=FEATURES[:2]).to_df()
    _equal(theirs, ours)
