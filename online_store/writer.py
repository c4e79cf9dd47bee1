"""Vectorized writes of Arrow data into Feast's Redis layout.

Public entry points:

``write_arrow(client, feature_view, data, *, project, key_ttl_seconds=None,
chunk_rows=20_000, progress=None) -> WriteStats``
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
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import redis
from feast import FeatureView

from foundation.errors import SchemaMismatchError
from online_store import blocks
from online_store.codec import (
    check_entity_type,
    check_feature_type,
    encode_timestamps,
    encode_values,
    event_micros,
    field_name,
    ts_field,
)
from online_store.decode import timestamp_nanos
from online_store.keys import encode_entity_keys
from online_store.rawpipe import execute_packed, pack, supports_raw

DEFAULT_CHUNK_ROWS = 20_000


@dataclass(frozen=True, slots=True)
class WriteSpec:
    """Everything the writer needs about a view, precomputed once."""

    name: str
    join_keys: tuple[str, ...]
    join_key_types: tuple[Any, ...]
    features: tuple[str, ...]
    feature_types: tuple[Any, ...]
    timestamp_field: str
    created_timestamp_field: str | None = None

    @classmethod
    def from_feature_view(cls, feature_view: FeatureView) -> WriteSpec:
        """Spec of a Feast feature view (its entity columns, features, source timestamps).

        Raises:
            UnsupportedTypeError: a feature or join key type is not supported.
        """
        join_keys = tuple(c.name for c in feature_view.entity_columns)
        join_types = tuple(c.dtype.to_value_type() for c in feature_view.entity_columns)
        features = tuple(f.name for f in feature_view.features)
        feature_types = tuple(f.dtype.to_value_type() for f in feature_view.features)
        for key, vt in zip(join_keys, join_types, strict=True):
            check_entity_type(feature_view.name, key, vt)
        for feature, vt in zip(features, feature_types, strict=True):
            check_feature_type(feature_view.name, feature, vt)
        source = feature_view.batch_source
        ts = source.timestamp_field if source is not None else "event_timestamp"
        created = (source.created_timestamp_column or None) if source is not None else None
        return cls(feature_view.name, join_keys, join_types, features, feature_types, ts, created)


@dataclass(slots=True)
class WriteStats:
    """Counts of one write call.

    Attributes:
        rows_in: rows given.
        rows_written: rows stored; the others were skipped because the stored row (or
            another row for the same key in the call) is as new or newer.
        newest_written_micros: the greatest event time stored (epoch microseconds), or
            None when nothing was stored; only reported by the atomic path.
    """

    rows_in: int = 0
    rows_written: int = 0
    newest_written_micros: int | None = None

    @property
    def rows_skipped(self) -> int:
        """Rows not written because a stored or given row for their key is as new."""
        return self.rows_in - self.rows_written


def _column(batch: pa.RecordBatch, name: str, view: str) -> pa.Array:
    idx = batch.schema.get_field_index(name)
    if idx < 0:
        raise SchemaMismatchError(
            f"column '{name}' of feature view '{view}' is missing from the data "
            f"(got {batch.schema.names}); include it",
            feature_view=view,
            column=name,
        )
    return batch.column(idx)


def _winners(keys: list[bytes], micros: np.ndarray, created: np.ndarray | None) -> np.ndarray:
    """Row index of the newest row per key (event time, then created time, then first)."""
    codes, _ = pd.factorize(np.asarray(keys, dtype=object))
    n = len(keys)
    sort_keys: list[np.ndarray] = [np.arange(n)]
    if created is not None:
        sort_keys.append(-created)
    sort_keys += [-micros, codes]
    order = np.lexsort(sort_keys)
    sorted_codes = codes[order]
    first = np.ones(n, dtype=bool)
    first[1:] = sorted_codes[1:] != sorted_codes[:-1]
    return np.sort(order[first])


class _Sink:
    """Where the ``HSET`` commands of a chunk go.

    On a single server the commands of chunk N are sent and acknowledged by a background
    thread on its own connection while the caller encodes chunk N+1, so Redis works while
    Python does. Chunk N+1's ``HMGET`` may then run before chunk N's writes land, so
    :attr:`in_flight` (what chunk N writes) is merged into the stored times; chunk N-1 is
    always acknowledged before chunk N is sent, so nothing older can be missed. On a
    cluster the commands run synchronously through a redis-py cluster pipeline.
    """

    def __init__(self, client: redis.Redis | redis.RedisCluster) -> None:
        self.client = client
        self.raw = supports_raw(client)
        self._executor = ThreadPoolExecutor(1, "redis-writer") if self.raw else None
        self._pending: Future[list[object]] | None = None
        self.in_flight: dict[bytes, int] = {}

    def submit(self, packed: list[bytes], replies: int, written: dict[bytes, int]) -> None:
        self.wait()
        assert self._executor is not None
        self._pending = self._executor.submit(execute_packed, self.client, packed, replies=replies)  # type: ignore[arg-type]
        self.in_flight = written

    def run(self, commands: list[tuple[bytes | str | int, ...]]) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            pipe.execute()

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()
        self.in_flight = {}

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)


def _chunk_winners(
    spec: WriteSpec, chunk: pa.RecordBatch, project: str
) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """The chunk's entity keys, event times (us) and the row index of each key's newest row."""
    keys = encode_entity_keys(
        [_column(chunk, k, spec.name) for k in spec.join_keys],
        spec.join_keys,
        spec.join_key_types,
        project,
        num_rows=chunk.num_rows,
    )
    micros = event_micros(_column(chunk, spec.timestamp_field, spec.name))
    created = None
    if spec.created_timestamp_field and spec.created_timestamp_field in chunk.schema.names:
        created_col = chunk.column(chunk.schema.get_field_index(spec.created_timestamp_field))
        if created_col.null_count == 0:
            created = event_micros(created_col)
    return keys, micros, _winners(keys, micros, created)


def _write_chunk(
    sink: _Sink,
    spec: WriteSpec,
    chunk: pa.RecordBatch,
    *,
    project: str,
    key_ttl_seconds: int | None,
    fields: list[bytes],
    ts_name: bytes,
) -> int:
    keys, micros, winners = _chunk_winners(spec, chunk, project)
    rows = winners.tolist()
    row_keys = [keys[i] for i in rows]
    stored = _stored_times(sink.client, row_keys, ts_name)
    in_flight = sink.in_flight
    if not any(stored) and in_flight.keys().isdisjoint(row_keys):
        # Nothing stored yet for any of these keys (a first load): every winner is written.
        return _write_rows(sink, spec, chunk, rows, keys, micros, key_ttl_seconds, fields, ts_name)
    new_nanos = (micros[rows] * 1000).tolist()
    keep: list[int] = []
    for i, new, old in zip(rows, new_nanos, stored, strict=True):
        old_ns = timestamp_nanos(old) if old else 0
        if in_flight:
            old_ns = max(old_ns, in_flight.get(keys[i], 0))
        # Feast treats a zero stored time like a missing one; equal times are skipped.
        if old_ns == 0 or new > old_ns:
            keep.append(i)
    return _write_rows(sink, spec, chunk, keep, keys, micros, key_ttl_seconds, fields, ts_name)


def _encode_rows(
    spec: WriteSpec, chunk: pa.RecordBatch, take: pa.Array, micros: np.ndarray
) -> tuple[list[bytes], list[list[bytes]]]:
    """Rows ``take`` of the chunk as stored bytes: the ``_ts`` values, then per feature."""
    ts_values = encode_timestamps(micros[take.to_numpy()])
    encoded = [
        encode_values(_column(chunk, f, spec.name).take(take), vt)
        for f, vt in zip(spec.features, spec.feature_types, strict=True)
    ]
    return ts_values, encoded


def _write_rows(
    sink: _Sink,
    spec: WriteSpec,
    chunk: pa.RecordBatch,
    keep: list[int],
    keys: list[bytes],
    micros: np.ndarray,
    key_ttl_seconds: int | None,
    fields: list[bytes],
    ts_name: bytes,
) -> int:
    """Send the ``HSET`` (+ ``EXPIRE``) commands for rows ``keep`` of the chunk."""
    if not keep:
        return 0
    take = pa.array(keep, type=pa.int64())
    kept_keys = [keys[i] for i in keep]
    if sink.raw:
        kept = np.asarray(keep)
        payload = _resp_hset_buffer(
            kept_keys,
            ts_name,
            micros[kept],
            [
                blocks.value_block(_column(chunk, f, spec.name).take(take), vt)
                for f, vt in zip(spec.features, spec.feature_types, strict=True)
            ],
            fields,
            key_ttl_seconds,
        )
        written = dict(zip(kept_keys, (micros[kept] * 1000).tolist(), strict=True))
        sink.submit([payload], len(keep) * (2 if key_ttl_seconds else 1), written)
        return len(keep)
    ts_values, encoded = _encode_rows(spec, chunk, take, micros)
    commands: list[tuple[bytes | str | int, ...]] = []
    for j, key in enumerate(kept_keys):
        items: list[bytes | str | int] = ["HSET", key, ts_name, ts_values[j]]
        for f, col in zip(fields, encoded, strict=True):
            items.append(f)
            items.append(col[j])
        commands.append(tuple(items))
        if key_ttl_seconds:
            commands.append(("EXPIRE", key, key_ttl_seconds))
    sink.run(commands)
    return len(keep)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _timestamp_block(micros: np.ndarray) -> blocks.Block:
    """``encode_timestamps`` as a block: proto3 omits zero seconds and zero nanos."""
    seconds = micros // 1_000_000
    nanos = (micros % 1_000_000) * 1000
    sec = blocks.blank(blocks.prefixed(b"\x08", blocks.varints(seconds)), seconds == 0)
    nano = blocks.blank(blocks.prefixed(b"\x10", blocks.varints(nanos)), nanos == 0)
    return blocks.hconcat([sec, nano])


def _resp_hset_buffer(
    keys: list[bytes],
    ts_name: bytes,
    micros: np.ndarray,
    values: list[blocks.Block],
    fields: list[bytes],
    key_ttl_seconds: int | None,
) -> bytes:
    """The chunk's ``HSET`` (+ ``EXPIRE``) commands as one RESP buffer, built in NumPy.

    One bulk string per argument, as redis-py would pack them, but no Python object per
    value: every part is a NumPy block (see :mod:`online_store.blocks`).
    """
    n = len(keys)
    key = blocks.from_list(keys)
    parts = [blocks.constant(b"*%d\r\n$4\r\nHSET\r\n" % (4 + 2 * len(values)), n)]
    parts += blocks.bulk(key)
    parts += blocks.bulk(_timestamp_block(micros), _bulk(ts_name))
    for field, value in zip(fields, values, strict=True):
        parts += blocks.bulk(value, _bulk(field))
    if key_ttl_seconds:
        parts.append(blocks.constant(b"*3\r\n$6\r\nEXPIRE\r\n", n))
        parts += blocks.bulk(key)
        parts.append(blocks.constant(_bulk(str(key_ttl_seconds).encode()), n))
    return blocks.join_rows(parts)


def _stored_times(
    client: redis.Redis | redis.RedisCluster, keys: list[bytes], ts_name: bytes
) -> list[bytes | None]:
    if supports_raw(client):
        # One EXISTS over the whole chunk first: on a first load no key exists yet and
        # the per-key reads (most of the chunk's round-trip cost) can be skipped.
        (existing,) = execute_packed(client, [pack(["EXISTS", *keys])])  # type: ignore[arg-type]
        if existing == 0:
            return [None] * len(keys)
        tail = b"$%d\r\n%b\r\n" % (len(ts_name), ts_name)
        packed = [b"*3\r\n$5\r\nHMGET\r\n$%d\r\n%b\r\n%b" % (len(k), k, tail) for k in keys]
        replies = execute_packed(client, packed)  # type: ignore[arg-type]
        return [r[0] for r in replies]  # type: ignore[index]
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, [ts_name])  # type: ignore[arg-type]  # redis-py accepts bytes keys
        return [r[0] for r in pipe.execute()]


# Compare-and-set of one row per key, atomic in Redis. KEYS: entity keys. ARGV: the
# ``_ts`` field, the number of features F, the F feature fields, the key TTL ("0": none),
# then per key: the new event time as whole seconds and microseconds within the second,
# its Timestamp bytes, F values. The stored Timestamp is decoded here (proto3 varints; a
# negative int64 is a 10-byte varint) and compared as (seconds, microseconds): Lua's
# doubles hold both exactly for every year 1..9999, which one microsecond count would not.
# Returns {rows written, seconds, microseconds of the newest row written} ({0} if none).
_CAS_LUA = b"""
local function varint(raw, i)
  local groups = {}
  repeat
    local b = string.byte(raw, i)
    i = i + 1
    groups[#groups + 1] = b % 128
  until b < 128
  local v, mul = 0, 1
  if #groups == 10 and groups[10] == 1 then
    for g = 1, 9 do v = v + (127 - groups[g]) * mul; mul = mul * 128 end
    return -(v + 1), i
  end
  for g = 1, #groups do v = v + groups[g] * mul; mul = mul * 128 end
  return v, i
end
local function decode(raw)
  local seconds, nanos, i = 0, 0, 1
  while i <= #raw do
    local tag = string.byte(raw, i)
    local v
    v, i = varint(raw, i + 1)
    if tag == 8 then seconds = v elseif tag == 16 then nanos = v end
  end
  return seconds, nanos
end
local ts_field, f = ARGV[1], tonumber(ARGV[2])
local ttl = tonumber(ARGV[3 + f])
local pos, written = 4 + f, 0
local top_s, top_us = nil, nil
for k = 1, #KEYS do
  local new_s, new_us = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1])
  local stored = redis.call('HGET', KEYS[k], ts_field)
  local newer = true
  if stored then
    local seconds, nanos = decode(stored)
    -- a zero stored time counts as none (Feast); new > old in nanoseconds is
    -- new > floor(old / 1000) in microseconds
    local old_us = math.floor(nanos / 1000)
    newer = (seconds == 0 and nanos == 0)
      or new_s > seconds or (new_s == seconds and new_us > old_us)
  end
  if newer then
    local args = {ts_field, ARGV[pos + 2]}
    for j = 1, f do
      args[#args + 1] = ARGV[2 + j]
      args[#args + 1] = ARGV[pos + 2 + j]
    end
    redis.call('HSET', KEYS[k], unpack(args))
    if ttl > 0 then redis.call('EXPIRE', KEYS[k], ttl) end
    written = written + 1
    if top_s == nil or new_s > top_s or (new_s == top_s and new_us > top_us) then
      top_s, top_us = new_s, new_us
    end
  end
  pos = pos + 3 + f
end
if top_s == nil then return {0} end
return {written, top_s, top_us}
"""
_CAS_SHA = hashlib.sha1(
    _CAS_LUA, usedforsecurity=False
).hexdigest()  # what Redis names the script by
_CAS_KEYS_PER_CALL = 256  # bounds how long one script call holds the server


def _write_chunk_atomic(
    client: redis.Redis | redis.RedisCluster,
    spec: WriteSpec,
    chunk: pa.RecordBatch,
    *,
    project: str,
    key_ttl_seconds: int | None,
    fields: list[bytes],
    ts_name: bytes,
) -> tuple[int, int | None]:
    """Write the chunk's newest row per key through the compare-and-set script.

    Returns (rows written, newest written event time in microseconds or None).
    """
    keys, micros, rows = _chunk_winners(spec, chunk, project)
    ts_values, encoded = _encode_rows(spec, chunk, pa.array(rows, type=pa.int64()), micros)
    head: list[bytes | str | int] = [ts_name, len(fields), *fields, key_ttl_seconds or 0]
    new_seconds = (micros[rows] // 1_000_000).tolist()
    new_us = (micros[rows] % 1_000_000).tolist()
    row_keys = [keys[i] for i in rows.tolist()]
    # One key per call on a cluster (each call runs on its key's node); on one server,
    # a few hundred keys per call.
    per_call = _CAS_KEYS_PER_CALL if supports_raw(client) else 1
    calls = []
    for start in range(0, len(row_keys), per_call):
        stop = min(start + per_call, len(row_keys))
        args: list[bytes | str | int] = list(head)
        for j in range(start, stop):
            args.append(new_seconds[j])
            args.append(new_us[j])
            args.append(ts_values[j])
            args.extend(col[j] for col in encoded)
        calls.append(("EVALSHA", _CAS_SHA, stop - start, *row_keys[start:stop], *args))
    try:
        return _run_calls(client, calls)
    except redis.exceptions.NoScriptError:
        # First write to this server (or it restarted): load the script, run again.
        # Safe to repeat: a row already written has an equal time, which is skipped.
        client.script_load(_CAS_LUA)
        return _run_calls(client, calls)


def _run_calls(
    client: redis.Redis | redis.RedisCluster, calls: list[tuple[bytes | str | int, ...]]
) -> tuple[int, int | None]:
    """Run the script calls; (rows written, newest written event time in us or None)."""
    with client.pipeline(transaction=False) as pipe:
        for call in calls:
            pipe.execute_command(*call)
        replies = pipe.execute()
    written = 0
    newest: int | None = None
    for reply in replies:
        written += int(reply[0])
        if len(reply) == 3:
            micros = int(reply[1]) * 1_000_000 + int(reply[2])
            newest = micros if newest is None else max(newest, micros)
    return written, newest


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
    sink = None if atomic else _Sink(client)
    try:
        for batch in batches:
            for start in range(0, batch.num_rows, chunk_rows):
                chunk = batch.slice(start, chunk_rows)
                if sink is None:
                    written, newest = _write_chunk_atomic(client, spec, chunk, **options)
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
    """
    spec = WriteSpec.from_feature_view(feature_view)
    batches = data.to_batches() if isinstance(data, pa.Table) else [data]
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
