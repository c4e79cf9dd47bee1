"""``POST /training-dataset``: entity rows in, point-in-time correct feature rows out, as Arrow.

Request, either:

- body: the entity rows as an Arrow IPC stream, ``Content-Type:
  application/vnd.apache.arrow.stream``; query: ``features`` (repeat it per
  ``view:feature``) or ``feature_service``, and ``full_feature_names`` (default false); or
- body: JSON ``{"entity_sql": "SELECT ...", "features": [...] | "feature_service": "...",
  "full_feature_names": false}``, the entity rows being an SQL query over the offline data;
  or ``{"entity_path": "trips/2026-01.parquet", ...}``, a Parquet file or directory inside
  ``FEATURESTORE_ENTITY_DIR`` (refused while that is unset).

Everything here is untrusted (DESIGN.md, "Trust boundaries"): the rows reach the offline store
as :class:`~offline_store.sandbox.UntrustedEntities`, so entity SQL must be one SELECT over the
requested views and runs on a locked-down DuckDB connection, paths are confined to the entity
directory, uploads are size-checked before they are decompressed (off the event loop), and
each request runs within the ``training_*`` limits of :class:`~service.settings.Settings`.

Response: an Arrow IPC stream, streamed batch by batch from DuckDB (the whole dataset is never
held in memory). Errors found before the first batch (unknown features, missing join keys, bad
timestamps, refused SQL, limits) are ``{"error": {...}}`` 4xx answers; an error after it (the
time limit while streaming) ends the stream without Arrow's end-of-stream marker, which the
offline store SDK (``offline_store.sdk.get_training_dataset(url=...)``) reports as an error.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections.abc import Iterator
from typing import Annotated, Any

import pyarrow as pa
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import StreamingResponse
from feast import FeatureStore
from starlette.concurrency import run_in_threadpool

from foundation.errors import (
    BackendUnavailableError,
    FeatureStoreError,
    InvalidRequestError,
    ServiceBusyError,
)
from offline_store.ipc import ARROW_STREAM, ipc_chunks, read_bounded_ipc
from offline_store.sandbox import ConfinedFiles, SandboxedSql, UntrustedEntities
from offline_store.sdk import build_job, stream_job
from service.settings import Settings

router = APIRouter(tags=["training"])
log = logging.getLogger(__name__)

BATCH_ROWS = 65_536

_ERROR_BODY: dict[str, Any] = {
    "content": {
        "application/json": {"example": {"error": {"type": "feature_not_found", "message": "..."}}}
    }
}


def _start(
    store: FeatureStore,
    entity_source: UntrustedEntities,
    features: list[str] | None,
    feature_service: str | None,
    full_feature_names: bool,
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Build the job and run it up to its first batch, so input errors surface as 4xx."""
    job = build_job(
        store, entity_source, features, feature_service, full_feature_names=full_feature_names
    )
    return stream_job(job, BATCH_ROWS)


class _Slot:
    """One of the worker's training slots, released exactly once, from any thread."""

    def __init__(self, slots: threading.BoundedSemaphore) -> None:
        self._slots = slots
        self._lock = threading.Lock()
        self._held = True

    def release(self) -> None:
        with self._lock:
            if self._held:
                self._held = False
                self._slots.release()


def _take_slot(app: FastAPI, settings: Settings) -> _Slot:
    """A training slot, or 503: each request is bounded, this bounds how many run at once."""
    slots = getattr(app.state, "training_slots", None)
    if not isinstance(slots, threading.BoundedSemaphore):
        # No await since the lookup: on the event loop this cannot race.
        slots = threading.BoundedSemaphore(settings.training_max_concurrent)
        app.state.training_slots = slots
    if not slots.acquire(blocking=False):
        raise ServiceBusyError(
            f"{settings.training_max_concurrent} training requests are running on this worker "
            "(FEATURESTORE_TRAINING_MAX_CONCURRENT); retry in a few seconds",
            limit=settings.training_max_concurrent,
            setting="FEATURESTORE_TRAINING_MAX_CONCURRENT",
        )
    return _Slot(slots)


def _finish(batches: Iterator[pa.RecordBatch], slot: _Slot) -> None:
    # Close the DuckDB side before handing the slot on, so its memory is really free.
    close = getattr(batches, "close", None)
    if close is not None:
        close()
    slot.release()


def _stream(schema: pa.Schema, batches: Iterator[pa.RecordBatch], slot: _Slot) -> Iterator[bytes]:
    """The response body; a failure after the first batch ends it without the end marker."""
    try:
        yield from ipc_chunks(schema, batches)
    except FeatureStoreError as exc:
        # The status is sent already; a body without Arrow's end-of-stream marker is how
        # the client learns the dataset is incomplete.
        _finish(batches, slot)
        log.warning("training dataset stream cut after it started: %s", exc.message)
    finally:
        _finish(batches, slot)


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except RecursionError:
        # A few KB of nested brackets must be a 422, not a 500.
        raise InvalidRequestError("malformed JSON body: nested too deeply") from None
    except ValueError as exc:
        raise InvalidRequestError(f"malformed JSON body: {exc}") from exc
    given = [k for k in ("entity_sql", "entity_path") if isinstance(parsed, dict) and k in parsed]
    if len(given) != 1 or not isinstance(parsed[given[0]], str):
        raise InvalidRequestError(
            'a JSON body must be an object with one of "entity_sql" (one SELECT over the '
            'offline views) or "entity_path" (a Parquet file inside FEATURESTORE_ENTITY_DIR) '
            "as a string; send entity rows as an Arrow IPC stream otherwise",
        )
    assert isinstance(parsed, dict)
    return parsed


def _json_rows(parsed: dict[str, Any], settings: Settings) -> SandboxedSql | ConfinedFiles:
    if "entity_sql" in parsed:
        return SandboxedSql.parse(parsed["entity_sql"])
    return ConfinedFiles.resolve(parsed["entity_path"], settings.entity_dir)


@router.post(
    "/training-dataset",
    response_class=StreamingResponse,
    responses={
        200: {"content": {ARROW_STREAM: {}}, "description": "Arrow IPC stream of the rows."},
        404: _ERROR_BODY,
        408: _ERROR_BODY,
        413: _ERROR_BODY,
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
                        "properties": {
                            "entity_sql": {"type": "string"},
                            "entity_path": {"type": "string"},
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
    settings = getattr(request.app.state, "settings", None)
    if not isinstance(store, FeatureStore) or not isinstance(settings, Settings):
        raise BackendUnavailableError("no feature store is loaded; check the service's --repo")
    slot = _take_slot(request.app, settings)
    try:
        schema, batches = await _prepare(
            request, store, settings, features, feature_service, full_feature_names
        )
    except BaseException:
        slot.release()
        raise
    body_stream = _stream(schema, batches, slot)
    # A response that is never sent (the client left first) still gives its slot back.
    weakref.finalize(body_stream, slot.release)
    return StreamingResponse(body_stream, media_type=ARROW_STREAM)


async def _prepare(
    request: Request,
    store: FeatureStore,
    settings: Settings,
    features: list[str] | None,
    feature_service: str | None,
    full_feature_names: bool,
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Read and check the body, then run the job up to its first batch."""
    body = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    rows: pa.Table | SandboxedSql | ConfinedFiles
    if content_type == "application/json":
        parsed = _parse_json(body)
        # Parsing SQL and resolving paths touch DuckDB and the disk: off the event loop.
        rows = await run_in_threadpool(_json_rows, parsed, settings)
        features = parsed.get("features", features)
        feature_service = parsed.get("feature_service", feature_service)
        full_feature_names = bool(parsed.get("full_feature_names", full_feature_names))
    elif content_type in (ARROW_STREAM, "application/octet-stream"):
        # Decompressing is CPU and memory: bounded, and never on the event loop.
        rows = await run_in_threadpool(
            lambda: read_bounded_ipc(
                body,
                max_bytes=settings.max_training_upload_bytes,
                max_rows=settings.max_training_entity_rows,
            )
        )
    else:
        raise InvalidRequestError(
            f"unsupported Content-Type {content_type!r}; send the entity rows as "
            f"{ARROW_STREAM} or an SQL entity query as application/json",
        )
    entities = UntrustedEntities(rows, settings.training_limits())
    # DuckDB and Feast block; keep them off the event loop.
    return await run_in_threadpool(
        _start, store, entities, features, feature_service, full_feature_names
    )
