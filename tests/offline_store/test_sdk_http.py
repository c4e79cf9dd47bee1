"""The SDK in-process and over HTTP (Arrow IPC), and the /training-dataset endpoint itself."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from feast import FeatureService, FeatureStore

from foundation.errors import (
    BackendUnavailableError,
    FeatureNotFoundError,
    FeatureServiceNotFoundError,
    FeatureStoreError,
    FeatureViewNotFoundError,
    InvalidEntityError,
    InvalidRequestError,
)
from offline_store.ipc import ARROW_STREAM, table_to_ipc
from offline_store.job import DuckDBRetrievalJob
from offline_store.sdk import get_training_dataset
from service.routes.training import router
from service.settings import Settings
from tests.offline_store.repo_helpers import (
    CUSTOMER_SCHEMA,
    DRIVER_SCHEMA,
    make_store,
    three_views,
    write_rows,
)

T0 = datetime(2024, 8, 1, tzinfo=UTC)
ENTITIES = pd.DataFrame(
    {
        "driver_id": [2, 1, 1, 9],
        "customer_id": ["b", "a", "a", "a"],
        "event_timestamp": [T0 + timedelta(minutes=m) for m in (1, 2, 2, 3)],
        "label": [1.0, 0.0, 0.5, 1.0],
    }
)
EXPECTED_RATE = [0.2, 0.1, 0.1, None]
EXPECTED_TIER = [None, "gold", "gold", "gold"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    root = tmp_path_factory.mktemp("sdk")
    objects = three_views()
    views = {getattr(o, "name", ""): o for o in objects}
    service = FeatureService(
        name="ranking", features=[views["driver_fv"][["rate"]], views["customer_fv"][["tier"]]]
    )
    fs = make_store(root, [*objects, service])
    write_rows(
        root / "data" / "driver.parquet",
        DRIVER_SCHEMA,
        [
            {"driver_id": 1, "event_timestamp": T0, "created": T0, "rate": 0.1, "trips": 1},
            {"driver_id": 2, "event_timestamp": T0, "created": T0, "rate": 0.2, "trips": 2},
        ],
    )
    write_rows(
        root / "data" / "customer.parquet",
        CUSTOMER_SCHEMA,
        [{"customer_id": "a", "ts": T0, "created": T0, "bal": 3.0, "tier": "gold"}],
    )
    return fs


@pytest.fixture(scope="module")
def app(store: FeatureStore) -> FastAPI:
    app = FastAPI()
    app.state.feature_store = store
    app.state.settings = Settings(repo_path=Path(store.repo_path))
    app.include_router(router)

    @app.exception_handler(FeatureStoreError)
    async def _handle(request: Request, exc: FeatureStoreError) -> JSONResponse:
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.status_code)

    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def _check(result: Any, full: bool = False) -> None:
    frame = result if isinstance(result, pd.DataFrame) else result.to_pandas()
    rate, tier = ("driver_fv__rate", "customer_fv__tier") if full else ("rate", "tier")
    assert frame["label"].tolist() == ENTITIES["label"].tolist()
    assert [None if pd.isna(v) else v for v in frame[rate]] == EXPECTED_RATE
    assert [None if pd.isna(v) else v for v in frame[tier]] == EXPECTED_TIER


@pytest.mark.parametrize("output", ["pandas", "arrow", "parquet"])
def test_in_process_outputs(store: FeatureStore, tmp_path: Path, output: str) -> None:
    result = get_training_dataset(
        ENTITIES,
        ["driver_fv:rate", "customer_fv:tier"],
        repo_path=store.repo_path,
        output=output,  # type: ignore[arg-type]
        path=tmp_path / "train.parquet",
    )
    if output == "parquet":
        assert result == str(tmp_path / "train.parquet")
        result = pq.read_table(result)
    else:
        assert isinstance(result, pd.DataFrame if output == "pandas" else pa.Table)
    _check(result)


@pytest.mark.parametrize("output", ["pandas", "arrow", "parquet"])
def test_http_outputs_match_in_process(
    store: FeatureStore, client: TestClient, tmp_path: Path, output: str
) -> None:
    local = get_training_dataset(ENTITIES, feature_service="ranking", store=store, output="arrow")
    remote = get_training_dataset(
        ENTITIES,
        feature_service="ranking",
        http_client=client,
        output=output,  # type: ignore[arg-type]
        path=tmp_path / "remote.parquet",
    )
    if output == "parquet":
        remote = pq.read_table(str(remote))
    remote_table = remote if isinstance(remote, pa.Table) else pa.Table.from_pandas(remote)
    assert isinstance(local, pa.Table)
    assert remote_table.select(local.column_names).to_pylist() == local.to_pylist()


def test_http_sql_entity_source_and_full_feature_names(client: TestClient) -> None:
    result = get_training_dataset(
        "SELECT driver_id, 'a' AS customer_id, event_timestamp + INTERVAL 1 MINUTE AS "
        "event_timestamp, 1.0 AS label FROM driver_src ORDER BY driver_id",
        ["driver_fv:rate", "customer_fv:tier"],
        http_client=client,
        full_feature_names=True,
        output="arrow",
    )
    assert isinstance(result, pa.Table)
    assert result["driver_fv__rate"].to_pylist() == [0.1, 0.2]
    assert result["customer_fv__tier"].to_pylist() == ["gold", "gold"]


def test_endpoint_streams_arrow_ipc(app: FastAPI) -> None:
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.post(
                "/training-dataset",
                params=[("features", "driver_fv:rate"), ("features", "customer_fv:tier")],
                content=table_to_ipc(pa.Table.from_pandas(ENTITIES, preserve_index=False)),
                headers={"Content-Type": ARROW_STREAM},
            )

    response = asyncio.run(post())
    assert response.status_code == 200
    assert response.headers["content-type"] == ARROW_STREAM
    _check(pa.ipc.open_stream(io.BytesIO(response.content)).read_all())


@pytest.mark.parametrize(
    ("kwargs", "error", "status"),
    [
        ({"features": ["driver_fv:nope"]}, FeatureNotFoundError, 404),
        ({"features": ["ghost_fv:rate"]}, FeatureViewNotFoundError, 404),
        ({"features": ["no_colon"]}, InvalidRequestError, 422),
        ({"feature_service": "ghost"}, FeatureServiceNotFoundError, 404),
    ],
)
def test_unknown_names_are_clear_errors_in_process_and_over_http(
    store: FeatureStore,
    client: TestClient,
    kwargs: dict[str, Any],
    error: type[FeatureStoreError],
    status: int,
) -> None:
    with pytest.raises(error):
        get_training_dataset(ENTITIES, store=store, **kwargs)
    with pytest.raises(error) as info:
        get_training_dataset(ENTITIES, http_client=client, **kwargs)
    assert info.value.status_code == status


def test_missing_join_key_over_http_is_422_with_the_key_named(client: TestClient) -> None:
    body = table_to_ipc(pa.Table.from_pandas(ENTITIES.drop(columns=["driver_id"])))
    response = client.post(
        "/training-dataset",
        params={"features": "driver_fv:rate"},
        content=body,
        headers={"Content-Type": ARROW_STREAM},
    )
    assert response.status_code == 422
    assert response.json()["error"]["join_key"] == "driver_id"
    with pytest.raises(InvalidEntityError):
        get_training_dataset(
            ENTITIES.drop(columns=["driver_id"]), ["driver_fv:rate"], http_client=client
        )


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b"not arrow", ARROW_STREAM), (b"{", "application/json"), (b"x", "text/plain")],
)
def test_malformed_bodies_are_422(client: TestClient, content: bytes, content_type: str) -> None:
    response = client.post(
        "/training-dataset",
        params={"features": "driver_fv:rate"},
        content=content,
        headers={"Content-Type": content_type},
    )
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request"


def test_exactly_one_target_and_one_feature_selection(store: FeatureStore) -> None:
    with pytest.raises(InvalidRequestError, match="exactly one"):
        get_training_dataset(ENTITIES, ["driver_fv:rate"], store=store, repo_path="x")
    with pytest.raises(InvalidRequestError, match="exactly one"):
        get_training_dataset(ENTITIES, ["driver_fv:rate"], "ranking", store=store)
    with pytest.raises(InvalidRequestError, match="path"):
        get_training_dataset(ENTITIES, ["driver_fv:rate"], store=store, output="parquet")


def test_unreachable_service_is_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailableError, match="cannot reach"):
        get_training_dataset(ENTITIES, ["driver_fv:rate"], url="http://127.0.0.1:9", timeout=5)


def test_a_stream_cut_after_the_first_batch_is_a_clear_error(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = DuckDBRetrievalJob.iter_batches

    def failing(
        self: DuckDBRetrievalJob, max_rows: int, **options: Any
    ) -> Iterator[pa.RecordBatch]:
        batches = real(self, max_rows, **options)
        yield next(batches)
        raise RuntimeError("disk died")  # injected fault after the response started

    monkeypatch.setattr(DuckDBRetrievalJob, "iter_batches", failing)
    with (
        TestClient(app, raise_server_exceptions=False) as client,
        pytest.raises(FeatureStoreError, match="ended early"),
    ):
        get_training_dataset(ENTITIES, ["driver_fv:rate"], http_client=client)
    with (
        TestClient(app, raise_server_exceptions=False) as client,
        pytest.raises(FeatureStoreError, match="ended early"),
    ):
        get_training_dataset(
            ENTITIES,
            ["driver_fv:rate"],
            http_client=client,
            output="parquet",
            path=tmp_path / "cut.parquet",
        )
    assert list(tmp_path.iterdir()) == []
