"""Compare-and-set writes: a Lua script writes each key only when its row is newer.

Used where writers may race (pushes from several workers, write-to-online-store): the
newer-than check and the write happen inside Redis in one step, so no interleaving can
put an older row over a newer one."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import redis

from online_store import blocks
from online_store.rawpipe import supports_raw
from online_store.write_plan import (
    WriteSpec,
    chunk_keys,
    chunk_winners,
    encode_rows,
)

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


def write_chunk_atomic(
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
    micros, rows = chunk_winners(spec, chunk)
    ts_values, encoded = encode_rows(spec, chunk, pa.array(rows, type=pa.int64()), micros)
    return write_rows_atomic(
        client,
        blocks.row_list([part.take(rows) for part in chunk_keys(spec, chunk, project)]),
        micros[rows],
        ts_values,
        encoded,
        key_ttl_seconds=key_ttl_seconds,
        fields=fields,
        ts_name=ts_name,
    )


def write_rows_atomic(
    client: redis.Redis | redis.RedisCluster,
    row_keys: list[bytes],
    micros: np.ndarray,
    ts_values: list[bytes],
    encoded: list[list[bytes]],
    *,
    key_ttl_seconds: int | None,
    fields: list[bytes],
    ts_name: bytes,
) -> tuple[int, int | None]:
    """Write one row per key (distinct keys) where it is newer than the stored one.

    Args:
        row_keys: the Redis keys.
        micros: each row's event time in microseconds.
        ts_values: each row's ``_ts`` value (:func:`online_store.codec.encode_timestamps`).
        encoded: per field of ``fields``, each row's stored value bytes.

    Returns (rows written, newest written event time in microseconds or None).
    """
    head: list[bytes | str | int] = [ts_name, len(fields), *fields, key_ttl_seconds or 0]
    new_seconds = (micros // 1_000_000).tolist()
    new_us = (micros % 1_000_000).tolist()
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
