"""Vectorized writes of Arrow data into Feast's Redis layout.

Public entry points:

``write_arrow(client, feature_view, data, *, project, key_ttl_seconds=None,
chunk_rows=10_000, progress=None) -> WriteStats``
    Write a ``pyarrow.Table`` or ``RecordBatch`` for a Feast ``FeatureView`` (push and
    ``write-to-online-store``). Columns are the view's join keys, feature names and its
    batch source's timestamp field (created timestamp column optional).

``write_batches(client, spec, batches, *, project, ...) -> WriteStats``
    The same for a stream of record batches and a precomputed :class:`WriteSpec`
    (what the materialization engine uses).

Feast's rule is kept: a row is written only when its event time is strictly newer than
the stored one and than any other row for the same key in the chunk (ties inside a
chunk go to the greater created timestamp, then the earlier row). Two ways to check it:

- ``atomic=True`` (``write_arrow``: pushes and ``write-to-online-store``): a Lua script
  compares each row with the stored ``_ts:<view>`` and sets it in one step, so
  concurrent writers of the same entity cannot leave an older row over a newer one.
- the bulk path (``write_batches`` default, materialization, one job per view at a
  time): the chunk's stored times are read with one ``HMGET`` pipeline, then the newer
  rows go out in one ``HSET`` (+ ``EXPIRE``) pipeline. A push landing between the two
  for the same entity can be overwritten by an older materialized row.

Every batch is cut into bounded chunks, so memory stays flat whatever the input size.
Works unchanged with ``redis.RedisCluster`` (its pipelines route per slot).

A write is not one transaction: it runs as many compare-and-set calls (a few hundred
keys each; one key each on a cluster, where each runs on its key's node), and Redis
rolls none back. When Redis fails part-way (connection lost or refused, timeout, a
cluster node down, a failover, maxmemory), ``write_arrow`` raises
``BackendUnavailableError`` and any subset of the rows may already be stored: each whole
(one ``HSET`` per row) and never over a newer row. Writing the same rows again is safe:
the stored ones have an equal event time and are skipped, the others are written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import redis

from foundation.errors import BackendUnavailableError
from online_store import blocks
from online_store.atomic_write import write_chunk_atomic
from online_store.codec import (
    field_name,
    timestamp_parts,
    ts_field,
    value_parts,
)
from online_store.decode import timestamp_nanos
from online_store.rawpipe import WriteSink
from online_store.write_plan import (
    DEFAULT_CHUNK_ROWS,
    WriteSpec,
    WriteStats,
    batch_column,
    chunk_keys,
    chunk_winners,
    encode_rows,
)

if TYPE_CHECKING:
    from feast import FeatureView

log = logging.getLogger(__name__)

# Errors that mean Redis cannot take the write now, as opposed to a command it refuses
# (those stay bugs, answered 500): connection refused or lost, timeouts (also
# BusyLoadingError, MaxConnectionsError and Sentinel's MasterNotFoundError, all
# ConnectionErrors), a cluster with a slot down or no reachable node, a replica that
# became read-only in a failover, TRYAGAIN during resharding, maxmemory reached.
REDIS_OUTAGE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,
    redis.exceptions.RedisClusterException,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.TryAgainError,
    redis.exceptions.OutOfMemoryError,
    OSError,
)


def _newer(micros: np.ndarray, stored: list[bytes | None]) -> np.ndarray:
    """Which rows are newer than the stored ones (a zero or missing stored time counts as
    absent; equal times are skipped, as in Feast)."""
    new_nanos = (micros * 1000).tolist()
    return np.array(
        [
            not old or (old_ns := timestamp_nanos(old)) == 0 or new > old_ns
            for new, old in zip(new_nanos, stored, strict=True)
        ],
        dtype=bool,
    )


def _write_chunk(
    sink: WriteSink,
    spec: WriteSpec,
    chunk: pa.RecordBatch,
    *,
    project: str,
    key_ttl_seconds: int | None,
    fields: list[bytes],
    ts_name: bytes,
) -> int:
    micros, winners = chunk_winners(spec, chunk)
    if len(winners) < chunk.num_rows:
        chunk, micros = chunk.take(pa.array(winners, pa.int64())), micros[winners]
    key = chunk_keys(spec, chunk, project)
    if not sink.raw:
        stored = _stored_times(sink.client, key, ts_name)
        if stored is not None:
            kept = np.flatnonzero(_newer(micros, stored))
            chunk, micros = chunk.take(pa.array(kept, pa.int64())), micros[kept]
            key = [part.take(kept) for part in key]
        if chunk.num_rows:
            keys = blocks.row_list(key)
            _run_commands(sink, spec, chunk, keys, micros, key_ttl_seconds, fields, ts_name)
        return int(chunk.num_rows)
    # Encode every winner while the write in flight lands, then drop the rows that are
    # not newer than what is stored (none on a first load).
    payload, ends = _resp_hset_buffer(
        key,
        ts_name,
        micros,
        [
            value_parts(batch_column(chunk, f, spec.name), vt)
            for f, vt in zip(spec.features, spec.feature_types, strict=True)
        ],
        fields,
        key_ttl_seconds,
    )
    rows = int(chunk.num_rows)
    stored = sink.after_in_flight(lambda: _stored_times(sink.client, key, ts_name, sink.call))
    if stored is not None:
        keep = _newer(micros, stored)
        payload, rows = blocks.select_rows(payload, ends, keep), int(keep.sum())
    if rows:
        sink.submit(payload, rows * (2 if key_ttl_seconds else 1))
    return rows


def _run_commands(
    sink: WriteSink,
    spec: WriteSpec,
    chunk: pa.RecordBatch,
    keys: list[bytes],
    micros: np.ndarray,
    key_ttl_seconds: int | None,
    fields: list[bytes],
    ts_name: bytes,
) -> None:
    """Every row's ``HSET`` (+ ``EXPIRE``) through a redis-py pipeline (clusters)."""
    ts_values, encoded = encode_rows(spec, chunk, None, micros)
    commands: list[tuple[bytes | str | int, ...]] = []
    for j, key in enumerate(keys):
        items: list[bytes | str | int] = ["HSET", key, ts_name, ts_values[j]]
        for f, col in zip(fields, encoded, strict=True):
            items.append(f)
            items.append(col[j])
        commands.append(tuple(items))
        if key_ttl_seconds:
            commands.append(("EXPIRE", key, key_ttl_seconds))
    sink.run(commands)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _resp_hset_buffer(
    key: list[blocks.Block],
    ts_name: bytes,
    micros: np.ndarray,
    values: list[list[blocks.Block]],
    fields: list[bytes],
    key_ttl_seconds: int | None,
) -> tuple[bytes, np.ndarray]:
    """The chunk's ``HSET`` (+ ``EXPIRE``) commands as one RESP buffer, built in NumPy, and
    where each row's commands end in it.

    One bulk string per argument, as redis-py would pack them, but no Python object per
    value: every part is a NumPy block (see :mod:`online_store.blocks`). ``key`` and each
    of ``values`` are the blocks of one argument per row.
    """
    n = key[0].rows
    key_bulk = blocks.bulk(key)
    parts = [blocks.constant(b"*%d\r\n$4\r\nHSET\r\n" % (4 + 2 * len(values)), n)]
    parts += key_bulk
    parts += blocks.bulk(timestamp_parts(micros), _bulk(ts_name))
    for field, value in zip(fields, values, strict=True):
        parts += blocks.bulk(value, _bulk(field))
    if key_ttl_seconds:
        parts.append(blocks.constant(b"*3\r\n$6\r\nEXPIRE\r\n", n))
        parts += key_bulk
        parts.append(blocks.constant(_bulk(str(key_ttl_seconds).encode()), n))
    return blocks.rows_buffer(parts)


def _stored_times(
    client: redis.Redis | redis.RedisCluster,
    key: list[blocks.Block],
    ts_name: bytes,
    call: Callable[[bytes, int], list[object]] | None = None,
) -> list[bytes | None] | None:
    """Each key's stored ``_ts`` value (None where absent); None when no key exists yet.

    ``call`` sends packed commands and returns their replies (a single server, see
    :meth:`WriteSink.call`); without it the reads go through a redis-py pipeline.
    """
    n = key[0].rows
    if not n:
        return None
    if call is not None:
        # One EXISTS over the whole chunk first: on a first load no key exists yet and
        # the per-key reads (most of the chunk's round-trip cost) can be skipped.
        key_bulk = blocks.bulk(key)
        exists = b"*%d\r\n$6\r\nEXISTS\r\n" % (n + 1) + blocks.join_rows(key_bulk)
        (existing,) = call(exists, 1)
        if existing == 0:
            return None
        head = blocks.constant(b"*3\r\n$5\r\nHMGET\r\n", n)
        packed = blocks.join_rows([head, *key_bulk, blocks.constant(_bulk(ts_name), n)])
        return [r[0] for r in call(packed, n)]  # type: ignore[index]
    with client.pipeline(transaction=False) as pipe:
        for raw_key in blocks.row_list(key):
            pipe.hmget(raw_key, [ts_name])  # type: ignore[arg-type]  # redis-py accepts bytes keys
        stored = [r[0] for r in pipe.execute()]
    return stored if any(stored) else None


def write_batches(
    client: redis.Redis | redis.RedisCluster,
    spec: WriteSpec,
    batches: Iterable[pa.RecordBatch],
    *,
    project: str,
    key_ttl_seconds: int | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Callable[[int], None] | None = None,
    atomic: bool = False,
) -> WriteStats:
    """Write record batches for one view, never overwriting newer stored events.

    Args:
        client: redis-py client (``Redis`` or ``RedisCluster``), ``decode_responses=False``.
        spec: the view (see :meth:`WriteSpec.from_feature_view`).
        batches: Arrow record batches with join keys, features and the timestamp column.
        project: Feast project (key suffix).
        key_ttl_seconds: ``EXPIRE`` each written key after this many seconds when set.
        chunk_rows: rows per pipeline round trip (bounds memory and Redis buffers).
        progress: called with the number of input rows after each chunk.
        atomic: compare and set each row in one step in Redis (safe with concurrent
            writers of the same entities); otherwise read the chunk's stored times,
            then write (the bulk path, for a view's single materialization at a time).

    Returns:
        Rows seen and rows written.

    Raises:
        SchemaMismatchError: a needed column is missing.
        InvalidEntityError: null join keys or event times.
    """
    fields = [field_name(spec.name, f) for f in spec.features]
    ts_name = ts_field(spec.name)
    stats = WriteStats()
    options: dict[str, Any] = {
        "project": project,
        "key_ttl_seconds": key_ttl_seconds,
        "fields": fields,
        "ts_name": ts_name,
    }
    sink = None if atomic else WriteSink(client)
    try:
        for batch in batches:
            for start in range(0, batch.num_rows, chunk_rows):
                chunk = batch.slice(start, chunk_rows)
                if sink is None:
                    written, newest = write_chunk_atomic(client, spec, chunk, **options)
                    if newest is not None:
                        stats.newest_written_micros = max(
                            newest, stats.newest_written_micros or newest
                        )
                else:
                    written = _write_chunk(sink, spec, chunk, **options)
                stats.rows_written += written
                stats.rows_in += chunk.num_rows
                if progress is not None:
                    progress(chunk.num_rows)
    finally:
        if sink is not None:
            sink.close()
    return stats


def write_arrow(
    client: redis.Redis | redis.RedisCluster,
    feature_view: FeatureView,
    data: pa.Table | pa.RecordBatch,
    *,
    project: str,
    key_ttl_seconds: int | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Callable[[int], None] | None = None,
) -> WriteStats:
    """Write a table for a Feast feature view (push / write-to-online-store).

    Each row is compared with the stored one and set atomically in Redis, so concurrent
    writers of the same entity keep the newest row.

    Args:
        client: redis-py client, ``decode_responses=False``.
        feature_view: the target view; its batch source names the timestamp column.
        data: rows with the view's join keys, features and timestamp column.
        project: Feast project.
        key_ttl_seconds: the online store's ``key_ttl_seconds``.
        chunk_rows: rows per pipeline round trip.
        progress: called with rows processed after each chunk.

    Returns:
        Rows seen and rows written.

    Raises:
        SchemaMismatchError: a needed column is missing.
        InvalidEntityError: null join keys or event times.
        UnsupportedTypeError: the view has a type the codec cannot store.
        BackendUnavailableError: Redis could not take the write (see the module
            docstring for what may already be stored); writing the same rows again
            once Redis is back is safe.
    """
    spec = WriteSpec.from_feature_view(feature_view)
    batches = data.to_batches() if isinstance(data, pa.Table) else [data]
    try:
        return write_batches(
            client,
            spec,
            batches,
            project=project,
            key_ttl_seconds=key_ttl_seconds,
            chunk_rows=chunk_rows,
            progress=progress,
            atomic=True,
        )
    except REDIS_OUTAGE as exc:
        # The address and the driver's text go to the log only: HTTP callers get the
        # error class, like the read path.
        log.warning(
            "Redis write of feature view %r failed: %s: %s",
            feature_view.name,
            type(exc).__name__,
            exc,
        )
        raise BackendUnavailableError(
            f"the Redis online store could not take the write of feature view "
            f"{feature_view.name!r} ({type(exc).__name__}); retry the same write once Redis "
            "accepts writes again: rows stored before the failure are whole and not older "
            "than what was there, and the retry skips them",
            backend="redis",
            feature_view=feature_view.name,
        ) from exc
