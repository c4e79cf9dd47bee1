"""Arrow Flight for Feast's remote offline store: ``featurestore serve-offline``.

A Feast repo with ``offline_store: {type: remote, host: ..., port: ...}`` sends
``get_historical_features`` to ``feast serve_offline`` over Arrow Flight
(``feast/infra/offline_stores/remote.py`` at the pinned version): one ``do_exchange``
whose descriptor is a JSON command ``{"command_id", "api": "get_historical_features",
"feature_view_names", "feature_refs", "name_aliases", "project", "full_feature_names"
[, "entity_df_sql"]}``, the entity rows uploaded on the same stream (a one-column
placeholder table when the entities are an SQL string), the result read back on it.
This server answers that exchange with our exact DuckDB point-in-time join, the way
``POST /training-dataset`` does: the rows are :class:`~offline_store.sandbox.UntrustedEntities`
(entity SQL parsed and confined, uploads bounded by ``FEATURESTORE_MAX_TRAINING_*``), every
request runs within the ``training_*`` limits, and at most
``FEATURESTORE_TRAINING_MAX_CONCURRENT`` run at once.

Auth: Feast's client sends ``authorization: Bearer <token>`` on every call when the repo
sets ``auth`` (``type: kubernetes`` with ``user_token: <key>`` carries one of our API
keys). With ``--auth`` every call needs a key of scope ``read``; saving a dataset
(``persist``, a ``do_put``) needs ``write``, and reading one back is a
``pull_all_from_table_or_query`` exchange (see :mod:`offline_store.remote_datasets`).

Errors reach the client as Flight errors carrying our message: bad input as
``ArrowInvalid`` (gRPC INVALID_ARGUMENT), a missing or wrong key as
``FlightUnauthenticatedError``, a low scope as ``FlightUnauthorizedError``, busy or
unavailable backends as ``FlightUnavailableError``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.flight as fl
from feast import FeatureStore
from feast.infra.offline_stores.file_source import SavedDatasetFileStorage

from foundation.errors import (
    AuthenticationError,
    FeatureStoreError,
    PermissionDeniedError,
    RequestTooLargeError,
)
from offline_store.job import DuckDBRetrievalJob
from offline_store.remote_datasets import dataset_path, pull_all_job
from offline_store.sandbox import SandboxedSql, UntrustedEntities
from offline_store.sdk import build_job, stream_job
from offline_store.spark_job import SparkRetrievalJob
from service.auth import Authenticator, KeyStore, Scope, open_key_engine
from service.backends import open_feature_store
from service.settings import Settings

log = logging.getLogger(__name__)

HISTORICAL_API = "get_historical_features"
PULL_ALL_API = "pull_all_from_table_or_query"
PERSIST_API = "persist"
BATCH_ROWS = 65_536
_AUTH = "auth"


class _Caller(fl.ServerMiddleware):  # type: ignore[misc]
    """What :class:`_KeyCheck` learnt about the caller of one call."""

    def __init__(self, authorization: str | None) -> None:
        self.authorization = authorization


class _KeyCheck(fl.ServerMiddlewareFactory):  # type: ignore[misc]
    """Hands each call's ``authorization`` header to the server (checked per API there)."""

    def start_call(self, info: fl.CallInfo, headers: dict[str, list[str]]) -> _Caller:
        values = headers.get("authorization") or []
        return _Caller(values[0] if values else None)


def flight_error(exc: FeatureStoreError) -> Exception:
    """The Flight error a client sees for one of ours (the message kept)."""
    message = exc.message
    error: Exception
    if isinstance(exc, AuthenticationError):
        error = fl.FlightUnauthenticatedError(message)
    elif isinstance(exc, PermissionDeniedError):
        error = fl.FlightUnauthorizedError(message)
    elif exc.status_code == 503:
        error = fl.FlightUnavailableError(message)
    elif exc.status_code == 408:
        error = fl.FlightTimedOutError(message)
    elif exc.status_code < 500:
        error = pa.ArrowInvalid(message)
    else:
        error = fl.FlightServerError(message)
    return error


def _command(descriptor: fl.FlightDescriptor) -> dict[str, Any]:
    try:
        command = json.loads(descriptor.command)
    except (TypeError, ValueError):
        command = None
    if not isinstance(command, dict) or not isinstance(command.get("api"), str):
        raise pa.ArrowInvalid(
            'the descriptor must be a JSON command with an "api" field, as Feast\'s remote '
            "offline store sends"
        )
    return command


class OfflineFlightServer(fl.FlightServerBase):  # type: ignore[misc]
    """Feast's remote offline protocol over our DuckDB store (see the module docstring).

    Args:
        location: where to listen, e.g. ``grpc+tcp://127.0.0.1:8815``.
        store: the repo's Feast store (its offline store must be ours).
        settings: the service settings (limits, upload bounds, concurrency).
        auth: checks API keys; None serves without keys.
    """

    def __init__(
        self,
        location: str,
        *,
        store: FeatureStore,
        settings: Settings,
        auth: Authenticator | None,
    ) -> None:
        super().__init__(location, middleware={_AUTH: _KeyCheck()})
        self.store = store
        self.settings = settings
        self.auth = auth
        self._slots = threading.BoundedSemaphore(settings.training_max_concurrent)

    def _take_slot(self) -> None:
        """Hold one of the training slots (release with ``self._slots.release()``)."""
        if not self._slots.acquire(blocking=False):
            raise fl.FlightUnavailableError(
                f"{self.settings.training_max_concurrent} training requests are running "
                "(FEATURESTORE_TRAINING_MAX_CONCURRENT); retry in a few seconds"
            )

    def _authorize(self, context: fl.ServerCallContext, scope: Scope = Scope.READ) -> None:
        if self.auth is None:
            return
        caller = context.get_middleware(_AUTH)
        self.auth.authorize_blocking(caller.authorization if caller else None, scope)

    def _entities(self, command: dict[str, Any], reader: fl.MetadataRecordBatchReader) -> Any:
        """The uploaded entity rows (bounded), or the entity SQL, as the client sent them."""
        max_rows = self.settings.max_training_entity_rows
        max_bytes = self.settings.max_training_upload_bytes
        batches: list[pa.RecordBatch] = []
        rows = size = 0
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                break
            if chunk.data is None:
                continue
            rows += chunk.data.num_rows
            size += chunk.data.nbytes
            if rows > max_rows or size > max_bytes:
                raise RequestTooLargeError(
                    f"the entity rows exceed {max_rows} rows or {max_bytes} bytes "
                    "(FEATURESTORE_MAX_TRAINING_ENTITY_ROWS / _UPLOAD_BYTES); split the request",
                    limit=max_rows,
                )
            batches.append(chunk.data)
        sql = command.get("entity_df_sql")
        if sql is not None:
            if not isinstance(sql, str):
                raise pa.ArrowInvalid('"entity_df_sql" must be a string')
            return SandboxedSql.parse(sql)
        if not batches:
            raise pa.ArrowInvalid(
                "no entity rows: pass an entity dataframe or an SQL query to "
                "get_historical_features (start_date/end_date without entities is not served)"
            )
        return pa.Table.from_batches(batches, schema=reader.schema)

    def _job(
        self, command: dict[str, Any], reader: fl.MetadataRecordBatchReader
    ) -> DuckDBRetrievalJob | SparkRetrievalJob:
        """The ``get_historical_features`` job a command asks for, on the uploaded rows."""
        refs = command.get("feature_refs")
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs) or not refs:
            raise pa.ArrowInvalid('"feature_refs" must be a non-empty list of "view:feature"')
        entities = UntrustedEntities(
            self._entities(command, reader), self.settings.training_limits()
        )
        return build_job(
            self.store,
            entities,
            features=refs,
            full_feature_names=bool(command.get("full_feature_names", False)),
        )

    def do_exchange(
        self,
        context: fl.ServerCallContext,
        descriptor: fl.FlightDescriptor,
        reader: fl.MetadataRecordBatchReader,
        writer: fl.MetadataRecordBatchWriter,
    ) -> None:
        """Answer one ``get_historical_features`` exchange (Feast's remote client)."""
        try:
            self._authorize(context)
            command = _command(descriptor)
            if command["api"] not in (HISTORICAL_API, PULL_ALL_API):
                raise pa.ArrowInvalid(
                    f"api {command['api']!r} is not served here; this server answers "
                    f"{HISTORICAL_API!r} (the training-set join) and {PULL_ALL_API!r} "
                    "(reading a saved dataset)"
                )
            self._take_slot()
            try:
                if command["api"] == PULL_ALL_API:
                    schema, batches = stream_job(pull_all_job(self.store, command), BATCH_ROWS)
                else:
                    schema, batches = stream_job(self._job(command, reader), BATCH_ROWS)
                writer.begin(schema)
                for batch in batches:
                    writer.write_batch(batch)
            finally:
                self._slots.release()
        except FeatureStoreError as exc:
            raise flight_error(exc) from exc

    def _authorize_or_raise(self, context: fl.ServerCallContext) -> None:
        try:
            self._authorize(context)
        except FeatureStoreError as exc:
            raise flight_error(exc) from exc

    def _refuse(self, context: fl.ServerCallContext, what: str) -> None:
        self._authorize_or_raise(context)
        raise pa.ArrowInvalid(
            f"{what} is not served here; Feast's remote offline store reads with do_exchange "
            f"({HISTORICAL_API!r})"
        )

    def do_put(
        self,
        context: fl.ServerCallContext,
        descriptor: fl.FlightDescriptor,
        reader: fl.MetadataRecordBatchReader,
        writer: fl.FlightMetadataWriter,
    ) -> None:
        """Save a training dataset (Feast's ``persist``); other writes are refused.

        The result of the ``get_historical_features`` the command repeats is written where
        :func:`offline_store.remote_datasets.dataset_path` resolves the storage's name (a
        registered FileSource, or a confined path under the repo's ``data/``); it needs a
        key of scope ``write``.
        """
        try:
            command = _command(descriptor)
            if command["api"] != PERSIST_API:
                self._authorize_or_raise(context)
                self._refuse(context, "do_put (offline writes, logged features)")
            self._authorize(context, Scope.WRITE)
            if command.get("retrieve_func") != HISTORICAL_API:
                raise pa.ArrowInvalid(
                    f"only {HISTORICAL_API!r} results can be saved here, not "
                    f"{command.get('retrieve_func')!r}"
                )
            name = command.get("data_source_name")
            if not isinstance(name, str):
                raise pa.ArrowInvalid('"data_source_name" must be a string')
            target = dataset_path(self.store, name)
            self._take_slot()
            try:
                job = self._job(command, reader)
                job.persist(
                    SavedDatasetFileStorage(path=target),
                    allow_overwrite=bool(command.get("allow_overwrite", False)),
                )
            finally:
                self._slots.release()
        except FeatureStoreError as exc:
            raise flight_error(exc) from exc

    def do_get(self, context: fl.ServerCallContext, ticket: fl.Ticket) -> fl.FlightDataStream:
        """Refused: this server keeps no flights between calls."""
        self._refuse(context, "do_get")

    def list_flights(self, context: fl.ServerCallContext, criteria: bytes) -> Iterator[Any]:
        """No stored flights: results stream back on the exchange that asked."""
        self._authorize_or_raise(context)
        return iter(())


def build_server(settings: Settings, *, port: int) -> OfflineFlightServer:
    """The Flight server for ``settings``' repo, with API keys when ``settings.auth``.

    Args:
        settings: repo, host, limits, auth.
        port: the port to listen on (0: any free port; see ``server.port``).

    Returns:
        The server, listening; call ``serve()`` to block on it.
    """
    store = open_feature_store(settings)
    auth = None
    if settings.auth:
        engine = open_key_engine(
            settings.resolved_registry_url(), settings.registry_timeout_seconds
        )
        auth = Authenticator(
            KeyStore(engine, project=store.project, cache_seconds=settings.api_key_cache_seconds),
            timeout=settings.registry_timeout_seconds,
        )
    location = f"grpc+tcp://{settings.host}:{port}"
    server = OfflineFlightServer(location, store=store, settings=settings, auth=auth)
    log.info("featurestore serve-offline: Arrow Flight on %s", location)
    return server
