"""``POST /training-dataset``: entity rows in, point-in-time correct feature rows out, as Arrow.

Request, either:

- body: the entity rows as an Arrow IPC stream, ``Content-Type:
  application/vnd.apache.arrow.stream``; query: ``features`` (repeat it per
  ``view:feature``) or ``feature_service``, and ``full_feature_names`` (default false); or
- body: JSON ``{"entity_sql": "SELECT ...", "features": [...] | "feature_service": "...",
  "full_feature_names": false}``, the entity rows being an SQL query over the offline data.

Response: an Arrow IPC stream, streamed batch by batch from DuckDB (the whole dataset is never
held in memory). Errors found before the first batch (unknown features, missing join keys, bad
timestamps) are ``{"error": {...}}`` 4xx answers; the offline store SDK
(``offline_store.sdk.get_training_dataset(url=...)``) is the client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

import pyarrow as pa
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from feast import FeatureStore
from starlette.concurrency import run_in_threadpool

from foundation.errors import BackendUnavailableError, InvalidRequestError
from offline_store.entities import EntitySource
from offline_store.ipc import ARROW_STREAM, ipc_chunks, ipc_to_table
from offline_store.sdk import build_job

router = APIRouter(tags=["training"])

BATCH_ROWS = 65_536

_ERROR_BODY: dict[str, Any] = {
    "content": {
        "application/json": {"example": {"error": {"type": "feature_not_found", "message": "..."}}}
    }
}


def _start(
    store: FeatureStore,
    entity_source: EntitySource,
    features: list[str] | None,
    feature_service: str | None,
    full_feature_names: bool,
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Build the job and run it up to its first batch, so input errors surface as 4xx."""
    job = build_job(
        store, entity_source, features, feature_service, full_feature_names=full_feature_names
    )
    batches = job.iter_batches(BATCH_ROWS)
    first = next(batches, None)
    if first is None:
        empty = job.to_arrow()
        return empty.schema, iter(())

    def rest() -> Iterator[pa.RecordBatch]:
        yield first
        yield from batches

    return first.schema, rest()


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise InvalidRequestError(f"malformed JSON body: {exc}") from exc
    except RecursionError:
        raise InvalidRequestError("malformed JSON body: nested too deeply") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("entity_sql"), str):
        raise InvalidRequestError(
            'a JSON body must be an object with "entity_sql" (an SQL query over the offline '
            "data); send entity rows as an Arrow IPC stream instead otherwise",
        )
    return parsed


@router.post(
    "/training-dataset",
    response_class=StreamingResponse,
    responses={
        200: {"content": {ARROW_STREAM: {}}, "description": "Arrow IPC stream of the rows."},
        404: _ERROR_BODY,
        422: _ERROR_BODY,
        503: _ERROR_BODY,
    },
    # The body is read raw (Arrow IPC or JSON), so describe it for the OpenAPI page by hand.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}},
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["entity_sql"],
                        "properties": {
                            "entity_sql": {"type": "string"},
                            "features": {"type": "array", "items": {"type": "string"}},
                            "feature_service": {"type": "string"},
                            "full_feature_names": {"type": "boolean"},
                        },
                    }
                },
            },
        }
    },
)
async def training_dataset(
    request: Request,
    features: Annotated[list[str] | None, Query()] = None,
    feature_service: str | None = None,
    full_feature_names: bool = False,
) -> StreamingResponse:
    """Point-in-time correct training rows for the posted entity rows (see module docstring)."""
    store = getattr(request.app.state, "feature_store", None)
    if not isinstance(store, FeatureStore):
        raise BackendUnavailableError("no feature store is loaded; check the service's --repo")
    body = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    entity_source: EntitySource
    if content_type == "application/json":
        parsed = _parse_json(body)
        entity_source = parsed["entity_sql"]
        features = parsed.get("features", features)
        feature_service = parsed.get("feature_service", feature_service)
        full_feature_names = bool(parsed.get("full_feature_names", full_feature_names))
    elif content_type in (ARROW_STREAM, "application/octet-stream"):
        entity_source = ipc_to_table(body)
    else:
        raise InvalidRequestError(
            f"unsupported Content-Type {content_type!r}; send the entity rows as "
            f"{ARROW_STREAM} or an SQL entity query as application/json",
        )
    # DuckDB and Feast block; keep them off the event loop.
    schema, batches = await run_in_threadpool(
        _start, store, entity_source, features, feature_service, full_feature_names
    )
    return StreamingResponse(ipc_chunks(schema, batches), media_type=ARROW_STREAM)
