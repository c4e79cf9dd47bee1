"""POST /training-dataset with a read key: hostile entity SQL and paths are refused whole.

Every case runs against the real example repo over HTTP with auth on. A marker file with a
unique string sits outside the repo; no response may contain it, and no file may appear
next to it. A legitimate query still returns exactly what the in-process SDK returns.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from offline_store.sandbox import lock_down
from offline_store.sdk import get_training_dataset
from service.app import create_app
from tests.service.conftest import AppClient, Repo, make_settings

FEATURES = ["driver_hourly_stats:conv_rate", "customer_profile:membership_tier"]
VIEWS = "customer_profile, customer_profile_source, driver_hourly_stats, driver_stats_source"
ROW = "TIMESTAMP '2026-01-01' AS event_timestamp, 1001 AS driver_id, 'c_0000001' AS customer_id"


@dataclass(frozen=True)
class Outside:
    """Files outside the repo that no caller may read or create."""

    dir: Path
    secret: str
    text: Path
    parquet: Path

    def untouched(self) -> bool:
        return sorted(p.name for p in self.dir.iterdir()) == ["marker.parquet", "marker.txt"]


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Outside:
    root = tmp_path_factory.mktemp("outside")
    secret = f"marker-{uuid.uuid4().hex}"
    (root / "marker.txt").write_text(secret)
    # A valid entity table: if anything could read it, the join would return the secret.
    pq.write_table(
        pa.table(
            {
                "driver_id": [1001],
                "customer_id": ["c_0000001"],
                "event_timestamp": [datetime(2026, 1, 1, tzinfo=UTC)],
                "label": [secret],
            }
        ),
        root / "marker.parquet",
    )
    return Outside(root, secret, root / "marker.txt", root / "marker.parquet")


@pytest.fixture(scope="module")
def app(repo: Repo) -> Iterator[AppClient]:
    client = AppClient(create_app(make_settings(repo, auth=True, api_key_cache_seconds=0)))
    yield client
    client.close()


def post(app: AppClient, key: str, body: dict[str, Any]) -> httpx.Response:
    return app.post(
        "/training-dataset",
        json={"features": FEATURES, **body},
        headers={"Authorization": f"Bearer {key}"},
    )


def arrow(response: httpx.Response) -> pa.Table:
    assert response.status_code == 200, response.text
    return pa.ipc.open_stream(io.BytesIO(response.content)).read_all()


# (case id, entity_sql with {dir}/{text}/{parquet}/{repo} placeholders, expected error type)
ABUSES: list[tuple[str, str, str]] = [
    ("read_text_etc_passwd", f"SELECT content AS x, {ROW} FROM read_text('/etc/passwd')", "r"),
    ("read_text_marker", f"SELECT content AS x, {ROW} FROM read_text('{{text}}')", "r"),
    ("read_csv_auto_marker", "SELECT * FROM read_csv_auto('{text}')", "r"),
    ("read_blob_registry", "SELECT * FROM read_blob('{repo}/data/registry.db')", "r"),
    ("read_parquet_outside", "SELECT * FROM read_parquet('{parquet}')", "r"),
    ("read_parquet_etc", "SELECT * FROM read_parquet('/etc/*')", "r"),
    ("parquet_scan_outside", "SELECT * FROM parquet_scan('{parquet}')", "r"),
    ("path_as_table", "SELECT * FROM '{parquet}'", "r"),
    ("glob_root", f"SELECT file AS x, {ROW} FROM glob('/*')", "r"),
    ("url_table_function", "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')", "r"),
    ("url_as_table", "SELECT * FROM 'https://example.com/entities.parquet'", "r"),
    ("query_function", "SELECT * FROM query('SELECT 1')", "r"),
    ("system_view", f"SELECT sql AS x, {ROW} FROM duckdb_views", "r"),
    ("qualified_view", f"SELECT sql AS x, {ROW} FROM system.main.duckdb_views", "r"),
    (
        "cte_shadow_outside_its_scope",
        f"SELECT sql AS x, {ROW} FROM duckdb_views UNION ALL "
        f"(WITH duckdb_views AS (SELECT 1) SELECT 'y', {ROW})",
        "r",
    ),
    (
        "cte_named_before_defined",
        f"WITH a AS (SELECT sql FROM duckdb_views), duckdb_views AS (SELECT 1) "
        f"SELECT sql AS x, {ROW} FROM a",
        "r",
    ),
    ("settings_function", "SELECT * FROM duckdb_settings()", "r"),
    ("scalar_subquery", f"SELECT (SELECT content FROM read_text('{{text}}')) AS x, {ROW}", "r"),
    (
        "paren_then_copy",
        f"SELECT {ROW}) ; COPY (SELECT 'owned' AS x) TO '{{dir}}/f.csv'; SELECT * FROM (SELECT 1",
        "r",
    ),
    ("second_statement", f"SELECT {ROW}; COPY (SELECT 'owned') TO '{{dir}}/g.csv'", "r"),
    ("comment_hides_end", "SELECT 1 -- \n; COPY (SELECT 'owned') TO '{dir}/h.csv'", "r"),
    ("block_comment", "SELECT 1 /* ) */ ; COPY (SELECT 'owned') TO '{dir}/i.csv'", "r"),
    ("string_hides_end", "SELECT ';' AS x; COPY (SELECT 'owned') TO '{dir}/j.csv'", "r"),
    ("copy", "COPY (SELECT 'owned') TO '{dir}/k.csv'", "r"),
    ("attach", "ATTACH '{dir}/x.db' AS x", "r"),
    ("install", "INSTALL httpfs", "r"),
    ("load", "LOAD httpfs", "r"),
    ("set", "SET enable_external_access = true", "r"),
    ("pragma", "PRAGMA database_list", "r"),
    ("call", "CALL duckdb_settings()", "r"),
    ("export_database", "EXPORT DATABASE '{dir}/export'", "r"),
    ("create_table", "CREATE TABLE t AS SELECT 1", "r"),
    ("nested_too_deep", "SELECT " + "abs(" * 900 + "1" + ")" * 900 + " AS x", "r"),
    ("path_not_sql", "{parquet}", "r"),
    ("etc_passwd_not_sql", "/etc/passwd", "r"),
    # No relation to refuse: the locked-down engine has no getenv() at all.
    ("getenv", f"SELECT getenv('HOME') AS x, {ROW}", "i"),
]
TYPES = {"r": "entity_sql_refused", "i": "invalid_request"}


@pytest.mark.parametrize(("sql", "kind"), [a[1:] for a in ABUSES], ids=[a[0] for a in ABUSES])
def test_hostile_entity_sql_is_refused_with_json_and_touches_nothing(
    app: AppClient, read_key: str, outside: Outside, repo: Repo, sql: str, kind: str
) -> None:
    text = sql.format(dir=outside.dir, text=outside.text, parquet=outside.parquet, repo=repo.path)
    response = post(app, read_key, {"entity_sql": text})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == TYPES[kind]
    assert outside.secret not in response.text
    assert "root:" not in response.text
    assert outside.untouched()
    if kind == "r":
        assert "one SELECT" in error["message"] or "entity_path" in error["message"]


def test_refusals_name_what_is_allowed(app: AppClient, read_key: str) -> None:
    error = post(app, read_key, {"entity_sql": "SELECT * FROM read_text('/etc/hosts')"}).json()
    assert error["error"]["message"].startswith("entity_sql may not read table function read_text")
    assert f"one SELECT over the offline views: {VIEWS}" in error["error"]["message"]
    error = post(app, read_key, {"entity_sql": "SELECT 1; SELECT 2"}).json()
    assert error["error"]["statement_types"] == ["SELECT", "SELECT"]
    error = post(app, read_key, {"entity_sql": "data/trips.parquet"}).json()
    assert "FEATURESTORE_ENTITY_DIR" in error["error"]["message"]


def test_sql_errors_name_the_callers_mistake_not_our_sql(app: AppClient, read_key: str) -> None:
    response = post(app, read_key, {"entity_sql": "SELECT nope FROM driver_hourly_stats"})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert message.startswith("entity_sql failed: Binder Error:")
    assert '"nope"' in message
    for internal in ("LINE", "__entity", "read_parquet", str(Path.cwd())):
        assert internal not in message


def test_entity_sql_over_the_views_matches_the_in_process_sdk(
    app: AppClient, read_key: str
) -> None:
    sql = (
        "WITH d AS (SELECT driver_id, max(event_timestamp) AS t FROM driver_hourly_stats "
        "GROUP BY driver_id) "
        "SELECT d.driver_id, c.customer_id, d.t + INTERVAL (r.range) MINUTE AS event_timestamp, "
        "r.range AS label FROM d JOIN (SELECT customer_id, row_number() OVER "
        "(ORDER BY customer_id) AS n FROM (SELECT DISTINCT customer_id FROM "
        "customer_profile_source)) c ON c.n = d.driver_id % 50 + 1, range(3) r "
        "ORDER BY d.driver_id, r.range"
    )
    remote = arrow(post(app, read_key, {"entity_sql": sql, "full_feature_names": True}))
    local = get_training_dataset(
        sql,
        FEATURES,
        store=app.app.state.feature_store,
        output="arrow",
        full_feature_names=True,
    )
    assert isinstance(local, pa.Table)
    assert remote.num_rows == local.num_rows > 100
    assert remote.to_pylist() == local.to_pylist()
    assert remote["driver_hourly_stats__conv_rate"].null_count < remote.num_rows


def test_entity_paths_are_refused_without_an_entity_dir(
    app: AppClient, read_key: str, outside: Outside
) -> None:
    for path in ("entities.parquet", str(outside.parquet)):
        response = post(app, read_key, {"entity_path": path})
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["type"] == "entity_path_refused"
        assert error["setting"] == "FEATURESTORE_ENTITY_DIR"
        assert outside.secret not in response.text


def test_both_or_neither_entity_field_is_422(app: AppClient, read_key: str) -> None:
    for body in ({"entity_sql": "SELECT 1", "entity_path": "x"}, {"entity_sql": 5}, {}):
        response = post(app, read_key, body)
        assert response.status_code == 422
        assert response.json()["error"]["type"] == "invalid_request"


def test_deeply_nested_json_is_422_not_500(app: AppClient, read_key: str) -> None:
    response = app.post(
        "/training-dataset",
        content=b"[" * 100_000,
        headers={"Authorization": f"Bearer {read_key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request"


@pytest.fixture(scope="module")
def entity_dir(tmp_path_factory: pytest.TempPathFactory, outside: Outside) -> Path:
    root = tmp_path_factory.mktemp("entities")
    rows = pa.table(
        {
            "driver_id": [1001, 1002, 1001],
            "customer_id": ["c_0000001", "c_0000002", "c_0000003"],
            "event_timestamp": [datetime.now(UTC).replace(microsecond=0)] * 3,
            "label": [1, 0, 1],
        }
    )
    pq.write_table(rows, root / "trips.parquet")
    (root / "nested").mkdir()
    pq.write_table(rows, root / "nested" / "part-0.parquet")
    os.symlink(outside.parquet, root / "link.parquet")
    os.symlink(outside.dir, root / "linked_dir")
    (root / "mixed").mkdir()
    pq.write_table(rows, root / "mixed" / "ok.parquet")
    os.symlink(outside.parquet, root / "mixed" / "escape.parquet")
    return root


@pytest.fixture(scope="module")
def dir_app(repo: Repo, entity_dir: Path) -> Iterator[AppClient]:
    settings = make_settings(repo, auth=True, api_key_cache_seconds=0, entity_dir=entity_dir)
    client = AppClient(create_app(settings))
    yield client
    client.close()


@pytest.mark.parametrize("path", ["trips.parquet", "nested", "{root}/trips.parquet"])
def test_an_entity_path_inside_the_entity_dir_matches_the_in_process_sdk(
    dir_app: AppClient, read_key: str, repo: Repo, entity_dir: Path, path: str
) -> None:
    remote = arrow(post(dir_app, read_key, {"entity_path": path.format(root=entity_dir)}))
    local = get_training_dataset(
        str(entity_dir / "trips.parquet"),
        FEATURES,
        store=dir_app.app.state.feature_store,
        output="arrow",
    )
    assert isinstance(local, pa.Table)
    assert remote.to_pylist() == local.to_pylist()
    assert remote["label"].to_pylist() == [1, 0, 1]


@pytest.mark.parametrize(
    "path",
    [
        "../{outside}/marker.parquet",
        "nested/../../{outside}/marker.parquet",
        "{parquet}",
        "link.parquet",
        "linked_dir/marker.parquet",
        "linked_dir",
        "mixed",
        "*.parquet",
        "file://{parquet}",
        "/etc/passwd",
        "/",
        "missing.parquet",
    ],
)
def test_entity_paths_escaping_the_entity_dir_are_refused(
    dir_app: AppClient, read_key: str, outside: Outside, entity_dir: Path, path: str
) -> None:
    raw = path.format(outside=outside.dir.name, parquet=outside.parquet)
    if raw.startswith("../"):
        raw = os.path.relpath(outside.parquet, entity_dir)  # a real way out, via ..
    response = post(dir_app, read_key, {"entity_path": raw})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "entity_path_refused"
    assert error["setting"] == "FEATURESTORE_ENTITY_DIR"
    assert outside.secret not in response.text
    assert outside.untouched()


def test_a_locked_down_connection_reads_only_its_allowed_files(
    outside: Outside, repo: Repo
) -> None:
    """The engine layer alone, without the parse check in front of it."""
    source = str(repo.path / "data" / "driver_stats.parquet")
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"CREATE TEMP VIEW v AS SELECT * FROM read_parquet('{source}')")
        lock_down(con, [source])
        rows = repo.table("driver_stats").num_rows
        assert con.execute("SELECT count(*) FROM v").fetchone() == (rows,)
        for sql in (
            f"SELECT * FROM read_text('{outside.text}')",
            f"SELECT * FROM read_parquet('{outside.parquet}')",
            f"SELECT * FROM read_blob('{repo.path}/data/registry.db')",
            f"COPY (SELECT 1) TO '{outside.dir}/owned.csv'",
            f"ATTACH '{outside.dir}/x.db'",
            "LOAD httpfs",
        ):
            with pytest.raises(duckdb.PermissionException):
                con.execute(sql)
        for sql in (
            "SET enable_external_access = true",
            "SET allowed_directories = ['/']",
            "RESET lock_configuration",
        ):
            with pytest.raises(duckdb.InvalidInputException, match=r"locked|Cannot change"):
                con.execute(sql)
    finally:
        con.close()
    assert outside.untouched()
