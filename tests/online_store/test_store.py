"""The plugin through Feast: apply-time type checks, deletions, connection resolution."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from feast import Entity, FeatureStore, FeatureView, Field, FileSource
from feast.types import Array, Float64, Json, Map, PdfBytes, Set, String, Struct
from feast.value_type import ValueType

from foundation.errors import UnsupportedTypeError
from online_store import connection
from online_store.codec import field_name
from online_store.connection import parse_connection_string, redact
from online_store.store import FastRedisOnlineStore
from tests.online_store.feast_repo import DUCKDB, RepoSpec, make_store, write_repo
from tests.online_store.views import T0, parquet_views


def _data(path: Path) -> Path:
    pq.write_table(
        pa.table(
            {
                "driver_id": pa.array([1, 2], pa.int64()),
                "a_x": [1.0, 2.0],
                "b_x": [3.0, 4.0],
                "event_ts": pa.array([T0, T0], pa.timestamp("us", tz="UTC")),
            }
        ),
        path,
    )
    return path


def _float_keyed_view(parquet: Path) -> list[Any]:
    """A view whose join key is a Float64, which Feast's entity key encoding cannot hold."""
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.DOUBLE)
    schema = [Field(name="driver_id", dtype=Float64), Field(name="a_x", dtype=Float64)]
    src = FileSource(path=str(parquet), timestamp_field="event_ts")
    return [driver, FeatureView(name="a", entities=[driver], schema=schema, source=src)]


@pytest.mark.parametrize(
    "feast_type",
    [Map, Json, Struct({"name": String, "age": String}), Set(String), PdfBytes, Array(Map)],
    ids=["map", "json", "struct", "set", "pdf", "map-list"],
)
def test_every_feast_type_applies(tmp_path: Path, redis_url: str, feast_type: Any) -> None:
    parquet = _data(tmp_path / "d.parquet")
    spec = RepoSpec("p", redis_url, True, True, offline=DUCKDB)
    write_repo(tmp_path / "repo", spec)
    store = FeatureStore(repo_path=str(tmp_path / "repo"))
    store.apply(parquet_views(parquet, extra=feast_type, views=("a",)))
    fresh = FeatureStore(repo_path=str(tmp_path / "repo"))
    (view,) = fresh.list_feature_views()
    assert {f.name: f.dtype for f in view.features}["bad"] == feast_type


def test_unstorable_join_key_type_is_rejected_at_apply(tmp_path: Path, redis_url: str) -> None:
    parquet = _data(tmp_path / "d.parquet")
    spec = RepoSpec("p", redis_url, True, True, offline=DUCKDB)
    write_repo(tmp_path / "repo", spec)
    store = FeatureStore(repo_path=str(tmp_path / "repo"))
    with pytest.raises(UnsupportedTypeError, match=r"join key 'driver_id'.*DOUBLE") as info:
        store.apply(_float_keyed_view(parquet))
    assert "Int64, Int32, String or Bytes" in info.value.message


def test_removing_a_view_removes_only_its_data(tmp_path: Path, redis_url: str) -> None:
    parquet = _data(tmp_path / "d.parquet")
    spec = RepoSpec("p", redis_url, True, True, offline=DUCKDB)
    store = make_store(tmp_path / "repo", spec, lambda: parquet_views(parquet))
    store.materialize(T0 - timedelta(1), T0 + timedelta(1))
    client = redis.Redis.from_url(redis_url)
    before = {k: client.hgetall(k) for k in list(client.scan_iter())}
    assert len(before) == 2
    both = {field_name("a", "a_x"), b"_ts:a", field_name("b", "b_x"), b"_ts:b"}
    assert all(set(v) == both for v in before.values())
    view_a = store.get_feature_view("a")
    store.apply([], objects_to_delete=[view_a], partial=False)
    after = {k: client.hgetall(k) for k in list(client.scan_iter())}
    assert after.keys() == before.keys()
    only_b = {field_name("b", "b_x"), b"_ts:b"}
    assert all(set(v) == only_b for v in after.values())
    store.apply([], objects_to_delete=[store.get_feature_view("b")], partial=False)
    assert client.dbsize() == 0


def test_teardown_deletes_every_key_of_the_project_only(tmp_path: Path, redis_url: str) -> None:
    parquet = _data(tmp_path / "d.parquet")
    client = redis.Redis.from_url(redis_url)
    stores = []
    for project in ("p", "q"):
        spec = RepoSpec(project, redis_url, True, True, offline=DUCKDB)
        store = make_store(tmp_path / project, spec, lambda: parquet_views(parquet))
        store.materialize(T0 - timedelta(1), T0 + timedelta(1))
        stores.append(store)
    assert client.dbsize() == 4
    stores[0].teardown()
    assert client.dbsize() == 2
    assert all(k.endswith(b"q") for k in list(client.scan_iter()))


def test_connection_string_in_feast_format_and_redaction() -> None:
    nodes, params = parse_connection_string("redis1:6380,db=2,password=s3cret,ssl=true")
    assert nodes == [{"host": "redis1", "port": 6380}]
    assert params == {"db": 2, "password": "s3cret", "ssl": True}
    assert "s3cret" not in redact("redis1:6380,db=2,password=s3cret")
    assert "s3cret" not in redact("redis://user:s3cret@host:6379/0")


def test_env_url_is_used_when_no_connection_string(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEATURESTORE_REDIS_URL", redis_url)
    assert connection.resolve_target(None, tmp_path) == redis_url
    assert connection.resolve_target("h:1,db=0", tmp_path) == "h:1,db=0"


def test_embedded_redis_starts_under_repo_data_when_nothing_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEATURESTORE_REDIS_URL", raising=False)
    url = connection.resolve_target(None, tmp_path)
    data_dir = (tmp_path / "data" / "redis").resolve()
    try:
        assert (data_dir / "server.json").exists()
        assert redis.Redis.from_url(url).ping()
        # A second resolution reuses the same server.
        assert connection.resolve_target(None, tmp_path) == url
    finally:
        connection._embedded.pop(data_dir).stop()


def test_plugin_class_and_config_are_found_by_feast_naming_rule() -> None:
    from feast.repo_config import get_online_config_from_type

    config_class = get_online_config_from_type("online_store.store.FastRedisOnlineStore")
    config = config_class(
        type="online_store.store.FastRedisOnlineStore",
        redis_type="redis_cluster",
        key_ttl_seconds=5,
    )
    assert config.key_ttl_seconds == 5
    assert FastRedisOnlineStore().async_supported.read is False


def test_rejected_apply_leaves_no_view_behind(tmp_path: Path, redis_url: str) -> None:
    parquet = _data(tmp_path / "d.parquet")
    write_repo(tmp_path / "repo", RepoSpec("p", redis_url, True, True, offline=DUCKDB))
    store = FeatureStore(repo_path=str(tmp_path / "repo"))
    with pytest.raises(UnsupportedTypeError):
        store.apply(_float_keyed_view(parquet))
    fresh = FeatureStore(repo_path=str(tmp_path / "repo"))
    assert [v.name for v in fresh.list_feature_views()] == []


def test_sdk_write_to_online_store_writes_stock_bytes(tmp_path: Path, module_redis: str) -> None:
    import pandas as pd

    from tests.online_store.conftest import snapshot

    parquet = _data(tmp_path / "d.parquet")
    urls = [module_redis + "7", module_redis + "8"]
    for url in urls:
        redis.Redis.from_url(url).flushdb()
    stock = make_store(
        tmp_path / "stock", RepoSpec("p", urls[0], False, False), lambda: parquet_views(parquet)
    )
    ours = make_store(
        tmp_path / "ours",
        RepoSpec("p", urls[1], True, True, offline=DUCKDB),
        lambda: parquet_views(parquet),
    )
    df = pd.DataFrame(
        {
            "driver_id": [1, 2, 1],
            "a_x": [1.5, None, 9.0],
            "event_ts": pd.to_datetime(
                ["2024-01-01T00:00:00.250Z", "1969-12-31T23:59:59.500Z", "2023-01-01T00:00:00.000Z"]
            ),
        }
    )
    for store in (stock, ours):
        store.write_to_online_store("a", df)
    result = snapshot(urls[1])
    assert len(result) == 2
    assert result == snapshot(urls[0])


def test_sdk_writes_never_put_an_older_row_over_a_newer_one(
    tmp_path: Path, module_redis: str
) -> None:
    """Feast's protobuf write path keeps the Arrow writers' rule: newest wins, the later
    row on a full tie, and an older row sent later leaves the stored one alone."""
    import pandas as pd

    parquet = _data(tmp_path / "d.parquet")
    url = module_redis + "9"
    redis.Redis.from_url(url).flushdb()
    store = make_store(
        tmp_path / "ours",
        RepoSpec("p", url, True, True, offline=DUCKDB),
        lambda: parquet_views(parquet),
    )

    def write(rows: list[tuple[int, float, str]]) -> None:
        store.write_to_online_store(
            "a",
            pd.DataFrame(
                {
                    "driver_id": [r[0] for r in rows],
                    "a_x": [r[1] for r in rows],
                    "event_ts": pd.to_datetime([r[2] for r in rows], utc=True, format="ISO8601"),
                }
            ),
        )

    def stored() -> dict[int, float]:
        frame = store.get_online_features(
            features=["a:a_x"], entity_rows=[{"driver_id": 1}, {"driver_id": 2}]
        ).to_df()
        return dict(zip(frame["driver_id"], frame["a_x"], strict=True))

    write(
        [
            (1, 1.0, "2024-01-01T00:00:00.000002Z"),
            (1, 2.0, "2024-01-01T00:00:00.000001Z"),  # older, later in the batch
            (2, 3.0, "2024-01-01T00:00:00Z"),
            (2, 4.0, "2024-01-01T00:00:00Z"),  # full tie: the later row wins
        ]
    )
    assert stored() == {1: 1.0, 2: 4.0}
    write([(1, 5.0, "2024-01-01T00:00:00.000001Z"), (2, 6.0, "2023-12-31T23:59:59Z")])
    assert stored() == {1: 1.0, 2: 4.0}
    write([(1, 7.0, "2024-01-01T00:00:00.000003Z")])  # one microsecond newer
    assert stored() == {1: 7.0, 2: 4.0}


def test_example_repo_without_its_registry_variable_fails_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh shell: plain ``FeatureStore`` on the example repo names the variable and
    ``featurestore env`` instead of SQLAlchemy's "Could not parse SQLAlchemy URL"."""
    from feast.repo_config import FeastConfigError

    from foundation.environment import REGISTRY_ENV, open_repo

    root = Path(__file__).resolve().parents[2]
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text(
        (root / "feature_repo" / "feature_store.yaml").read_text()
    )
    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    with pytest.raises(
        FeastConfigError, match=r"FEATURESTORE_REGISTRY_URL is not set.*featurestore env"
    ):
        FeatureStore(repo_path=str(repo))
    # The tooling's loader applies the default instead.
    assert open_repo(repo).list_feature_views() == []
    monkeypatch.setenv(REGISTRY_ENV, f"sqlite:///{tmp_path / 'registry.db'}")
    assert FeatureStore(repo_path=str(repo)).list_feature_views() == []
