"""The SDK's HTTP path: send entity rows as Arrow IPC, stream feature rows back.

Wire format (``POST /training-dataset``):

- entity rows in the body as an Arrow IPC stream (``Content-Type:
  application/vnd.apache.arrow.stream``) with ``features`` (repeatable), ``feature_service``
  and ``full_feature_names`` as query parameters; or, for an SQL entity source, a JSON body
  ``{"entity_sql": ..., "features": [...] | "feature_service": ..., "full_feature_names": ...}``;
- the answer is an Arrow IPC stream; errors are ``{"error": {"type", "message", ...}}`` with a
  4xx/5xx status and are raised here as the matching ``foundation.errors`` class.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from foundation.errors import BackendUnavailableError, FeatureStoreError, InvalidRequestError
from offline_store.entities import EntitySource, is_sql
from offline_store.ipc import ARROW_STREAM, ChunkReader, table_to_ipc

ENDPOINT = "/training-dataset"


def _error_classes() -> dict[str, type[FeatureStoreError]]:
    found: dict[str, type[FeatureStoreError]] = {}
    pending: list[type[FeatureStoreError]] = [FeatureStoreError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.error_type, cls)
        pending.extend(cls.__subclasses__())
    return found


def raise_for_error(status: int, body: bytes) -> None:
    """Raise the ``foundation.errors`` class named in an error response.

    Raises:
        FeatureStoreError: always (the subclass the service reported).
    """
    import json

    try:
        error = json.loads(body)["error"]
        cls = _error_classes().get(str(error.get("type")), FeatureStoreError)
        details = {k: v for k, v in error.items() if k not in ("type", "message")}
        raise cls(str(error.get("message")), **details)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise FeatureStoreError(
            f"training dataset service answered HTTP {status}: {body[:500]!r}", status=status
        ) from None


def _entity_table(source: EntitySource) -> pa.Table:
    if isinstance(source, pd.DataFrame):
        return pa.Table.from_pandas(source, preserve_index=False)
    if isinstance(source, pa.Table):
        return source
    path = str(source)
    if Path(path).is_dir():
        return ds.dataset(path, format="parquet").to_table()
    return pq.read_table(path)


def fetch_training_dataset(
    entity_source: EntitySource,
    features: Sequence[str] | None,
    feature_service: str | None,
    *,
    url: str | None,
    http_client: httpx.Client | None,
    output: str,
    path: str | Path | None,
    full_feature_names: bool,
    timeout: float,
) -> pd.DataFrame | pa.Table | str:
    """Ask the service for a training dataset (see the module docstring for the format).

    Returns:
        A DataFrame, an Arrow table, or the Parquet path written (batch by batch).

    Raises:
        InvalidRequestError: bad arguments.
        FeatureStoreError: the error the service returned.
    """
    if output not in ("pandas", "arrow", "parquet"):
        raise InvalidRequestError(f"output must be 'pandas', 'arrow' or 'parquet', not {output!r}")
    if output == "parquet" and path is None:
        raise InvalidRequestError("output='parquet' needs path=")
    request: dict[str, Any]
    if isinstance(entity_source, str) and is_sql(entity_source):
        request = {
            "json": {
                "entity_sql": entity_source,
                "features": list(features) if features is not None else None,
                "feature_service": feature_service,
                "full_feature_names": full_feature_names,
            }
        }
    else:
        params: list[tuple[str, str]] = [("features", f) for f in features or []]
        if feature_service is not None:
            params.append(("feature_service", feature_service))
        params.append(("full_feature_names", "true" if full_feature_names else "false"))
        request = {
            "params": params,
            "content": table_to_ipc(_entity_table(entity_source)),
            "headers": {"Content-Type": ARROW_STREAM, "Accept": ARROW_STREAM},
        }
    client = http_client or httpx.Client(base_url=url or "", timeout=timeout)
    try:
        with client.stream("POST", ENDPOINT, **request) as response:
            if response.status_code >= 400:
                raise_for_error(response.status_code, response.read())
            try:
                return _read_stream(response, output, path)
            except (pa.ArrowInvalid, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                # Errors after the first batch cannot change the status any more; the
                # server cuts the stream and the reader sees it end early.
                raise FeatureStoreError(
                    f"the training dataset stream ended early ({exc}); the service cut it, "
                    "at its time limit (FEATURESTORE_TRAINING_TIMEOUT_SECONDS, streaming "
                    "included) or on an error in its log: retry with fewer entity rows, "
                    "read the stream without pausing, or build large sets in-process",
                ) from exc
    except httpx.TransportError as exc:
        raise BackendUnavailableError(
            f"cannot reach the featurestore service at {url!r}: {exc}", url=url
        ) from exc
    finally:
        if http_client is None:
            client.close()


def _read_stream(
    response: httpx.Response, output: str, path: str | Path | None
) -> pd.DataFrame | pa.Table | str:
    source = ChunkReader(response.iter_bytes())
    try:
        return _decode(source, output, path)
    except OSError as exc:
        # Arrow reports a body that stops inside a batch as an I/O error; a cut response
        # is the service's doing, any other I/O error (a full disk) stays what it is.
        if source.cut:
            raise pa.ArrowInvalid(f"cut inside a batch: {exc}") from exc
        raise


def _decode(
    source: ChunkReader, output: str, path: str | Path | None
) -> pd.DataFrame | pa.Table | str:
    reader = pa.ipc.open_stream(source)
    if output == "parquet":
        assert path is not None
        dest = str(Path(path).absolute())
        # A cut stream must not leave a plausible-looking file behind.
        partial = f"{dest}.partial"
        try:
            with pq.ParquetWriter(partial, reader.schema) as writer:
                for batch in reader:
                    writer.write_batch(batch)
            _check_complete(source)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        os.replace(partial, dest)
        return dest
    table = reader.read_all()
    _check_complete(source)
    return table.to_pandas() if output == "pandas" else table


def _check_complete(source: ChunkReader) -> None:
    # Drain: the end marker may sit after the last batch the reader asked for.
    while source.read(1 << 16):
        pass
    if not source.complete:
        raise pa.ArrowInvalid("no end-of-stream marker")
