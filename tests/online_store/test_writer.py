"""Writer: Feast's never-older-over-newer rule, chunking, writes in flight, key TTL, Redis
Cluster."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from unittest import mock

import numpy as np
import pyarrow as pa
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.cluster import RedisCluster

from foundation.errors import InvalidEntityError, SchemaMismatchError
from online_store.codec import encode_timestamps, encode_values, field_name, ts_field
from online_store.embedded import EmbeddedRedis
from online_store.keys import encode_entity_keys
from online_store.rawpipe import HeldConnection
from online_store.reader import ReadPlan, ViewReadSpec
from online_store.value_types import ValueType
from online_store.write_plan import WriteSpec
from online_store.writer import write_arrow, write_batches
from tests.online_store.views import T0, TS, driver_view, rows

SPEC = ViewReadSpec(
    "stats",
    ("driver_id",),
    (driver_view().entity_columns[0].dtype.to_value_type(),),
    ("rate", "label"),
    0,
)


def _read(client: redis.Redis | RedisCluster, ids: list[int]) -> list[object]:
    return (
        ReadPlan.compile("p", [SPEC]).read(client, {"driver_id": ids}).columns["stats:rate"].values
    )


def test_older_write_after_newer_leaves_newer(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    fv = driver_view()
    write_arrow(client, fv, rows((1, 2.0, "new", T0)), project="p")
    stats = write_arrow(client, fv, rows((1, 1.0, "old", T0 - timedelta(seconds=1))), project="p")
    assert stats.rows_written == 0
    assert _read(client, [1]) == [2.0]


def test_equal_event_time_is_skipped_like_feast(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    fv = driver_view()
    write_arrow(client, fv, rows((1, 2.0, "first", T0)), project="p")
    write_arrow(client, fv, rows((1, 3.0, "second", T0)), project="p")
    assert _read(client, [1]) == [2.0]


def test_newest_row_in_a_batch_wins_whatever_its_position(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    data = rows(
        (2, 5.0, "tie-old-created", T0),
        (2, 6.0, "tie-new-created", T0),
        (1, 1.0, "a", T0),
        (1, 3.0, "c", T0 + timedelta(hours=1)),
        (1, 2.0, "b", T0 + timedelta(minutes=5)),
        created=[T0, T0 + timedelta(seconds=1), T0, T0, T0],
    )
    # Tiny chunks: an older row of driver 1 arrives in a later chunk than its newest row.
    # Within a chunk an event-time tie goes to the later created time; across chunks an
    # equal event time is skipped (Feast's rule), which is why the offline pull dedupes.
    write_arrow(client, driver_view(), data, project="p", chunk_rows=2)
    assert _read(client, [1, 2]) == [3.0, 6.0]
    rerun = write_arrow(client, driver_view(), data, project="p", chunk_rows=2)
    assert rerun.rows_written == 0


def test_key_ttl_seconds_expires_written_keys(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    write_arrow(client, driver_view(), rows((1, 1.0, "a", T0)), project="p", key_ttl_seconds=100)
    (key,) = client.keys()
    assert 0 < client.ttl(key) <= 100


def test_missing_column_is_a_schema_mismatch(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    table = rows((1, 1.0, "a", T0)).drop(["label"])
    with pytest.raises(SchemaMismatchError, match="'label'"):
        write_arrow(client, driver_view(), table, project="p")
    assert client.dbsize() == 0


def test_writer_and_reader_work_on_redis_cluster(cluster: RedisCluster) -> None:
    n = 500
    table = pa.table(
        {
            "driver_id": pa.array(range(n), pa.int64()),
            "rate": pa.array([float(i) for i in range(n)]),
            "label": pa.array([str(i) for i in range(n)]),
            "event_ts": pa.array([T0] * n, pa.timestamp("us", tz="UTC")),
        }
    )
    stats = write_arrow(
        cluster, driver_view(), table, project="p", chunk_rows=128, key_ttl_seconds=60
    )
    assert stats.rows_written == n
    older = table.set_column(
        3, "event_ts", pa.array([T0 - timedelta(1)] * n, pa.timestamp("us", tz="UTC"))
    )
    assert write_arrow(cluster, driver_view(), older, project="p").rows_written == 0
    assert _read(cluster, list(range(n))) == [float(i) for i in range(n)]
    per_node = [redis.Redis(port=node.port).dbsize() for node in cluster.get_nodes()]
    assert sum(per_node) == n
    assert all(size > 0 for size in per_node)


def test_random_duplicates_across_chunks_match_a_naive_reference(redis_url: str) -> None:
    import random

    rnd = random.Random(11)
    n, chunk = 3000, 97
    items = [
        (rnd.randrange(200), float(i), str(i), T0 + timedelta(seconds=rnd.randrange(500)))
        for i in range(n)
    ]
    expected: dict[int, tuple[float, object]] = {}
    for start in range(0, n, chunk):
        winners: dict[int, tuple[float, str, object]] = {}
        for key, rate, _, ts in items[start : start + chunk]:
            if key not in winners or ts > winners[key][2]:  # type: ignore[operator]
                winners[key] = (rate, "", ts)
        for key, (rate, _, ts) in winners.items():
            if key not in expected or ts > expected[key][1]:  # type: ignore[operator]
                expected[key] = (rate, ts)
    client = redis.Redis.from_url(redis_url)
    write_arrow(client, driver_view(), rows(*items), project="p", chunk_rows=chunk)
    keys = sorted(expected)
    assert _read(client, keys) == [expected[k][0] for k in keys]


def _slow_sends(delay: float) -> Callable[..., None]:
    """``HeldConnection.send`` that holds each chunk's writes back (a busy Redis)."""
    send = HeldConnection.send

    def slow(self: HeldConnection, packed: bytes, replies: int) -> None:
        if threading.current_thread().name.startswith("redis-writer"):
            time.sleep(delay)
        send(self, packed, replies)

    return slow


COMPOUND = WriteSpec(
    "pairs",
    ("shop", "item"),
    (ValueType.INT64, ValueType.STRING),
    ("price",),
    (ValueType.DOUBLE,),
    "event_ts",
)


@settings(
    max_examples=25,
    deadline=None,
    # Each example flushes the database itself.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    items=st.lists(
        st.tuples(
            st.integers(0, 2), st.sampled_from(["", "x", "é"]), st.integers(0, 6), st.floats(0, 9)
        ),
        min_size=1,
        max_size=40,
    ),
    chunk_rows=st.integers(1, 6),
    stored=st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from(["", "x", "é"]), st.integers(0, 6))
    ),
)
def test_bulk_path_keeps_the_newest_row_per_key_across_chunks_in_flight(
    redis_url: str,
    items: list[tuple[int, str, int, float]],
    chunk_rows: int,
    stored: list[tuple[int, str, int]],
) -> None:
    """Chunks sharing keys with the chunk still being written (held back here) never put an
    older row over a newer one: a naive reference of Feast's rule decides every key."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    expected: dict[tuple[int, str], tuple[int, float | None]] = {}
    for shop, item, second in stored:  # rows already in Redis before the run
        if (shop, item) not in expected or second > expected[shop, item][0]:
            expected[shop, item] = (second, None)
    if stored:
        first = pa.table(
            {
                "shop": [s for s, _, _ in stored],
                "item": [i for _, i, _ in stored],
                "price": pa.array([None] * len(stored), pa.float64()),
                "event_ts": pa.array([T0 + timedelta(seconds=t) for _, _, t in stored], TS),
            }
        )
        write_batches(client, COMPOUND, first.to_batches(), project="p")
    for start in range(0, len(items), chunk_rows):
        winners: dict[tuple[int, str], tuple[int, float]] = {}
        for shop, item, second, price in items[start : start + chunk_rows]:
            if (shop, item) not in winners or second > winners[shop, item][0]:
                winners[shop, item] = (second, price)
        for key, (second, price) in winners.items():
            if key not in expected or second > expected[key][0]:
                expected[key] = (second, price)
    table = pa.table(
        {
            "shop": [s for s, _, _, _ in items],
            "item": [i for _, i, _, _ in items],
            "price": [p for _, _, _, p in items],
            "event_ts": pa.array([T0 + timedelta(seconds=t) for _, _, t, _ in items], TS),
        }
    )
    with mock.patch.object(HeldConnection, "send", _slow_sends(0.01)):
        write_batches(client, COMPOUND, table.to_batches(), project="p", chunk_rows=chunk_rows)
    ordered = sorted(expected)
    redis_keys = encode_entity_keys(
        [pa.array([s for s, _ in ordered]), pa.array([i for _, i in ordered])],
        COMPOUND.join_keys,
        COMPOUND.join_key_types,
        "p",
    )
    price_field = field_name("pairs", "price")
    got = [client.hmget(k, [ts_field("pairs"), price_field]) for k in redis_keys]
    micros = np.array(
        [expected[k][0] * 1_000_000 + int(T0.timestamp()) * 1_000_000 for k in ordered]
    )
    prices = pa.array([expected[k][1] for k in ordered], pa.float64())
    assert got == [
        [ts, price]
        for ts, price in zip(
            encode_timestamps(micros), encode_values(prices, ValueType.DOUBLE), strict=True
        )
    ]
    assert client.dbsize() == len(expected)
    client.close()


def test_rows_that_map_to_one_redis_key_are_one_entity(redis_url: str) -> None:
    """An Int64 key read from a float column: 7.0 and 7.5 both store under key 7, so the
    newer row wins whichever comes last, as it would for two rows of 7."""
    spec = WriteSpec(
        "stats", ("driver_id",), (ValueType.INT64,), ("rate",), (ValueType.DOUBLE,), "event_ts"
    )
    table = pa.table(
        {
            "driver_id": pa.array([7.0, 7.5], pa.float64()),
            "rate": [1.0, 2.0],
            "event_ts": pa.array([T0 + timedelta(seconds=10), T0 + timedelta(seconds=5)], TS),
        }
    )
    client = redis.Redis.from_url(redis_url)
    stats = write_batches(client, spec, table.to_batches(), project="p")
    assert stats.rows_written == 1
    key = encode_entity_keys([pa.array([7])], spec.join_keys, spec.join_key_types, "p")[0]
    assert (
        client.hget(key, field_name("stats", "rate"))
        == encode_values(pa.array([1.0]), ValueType.DOUBLE)[0]
    )
    client.close()


def test_a_key_value_out_of_the_keys_range_is_refused_before_any_write(redis_url: str) -> None:
    """An Int32 key read from an int64 column holding 2**31 + 7: cast, it would be written
    under key -2**31 + 7, another entity's. The batch is refused, naming the column and
    the value, and nothing of it is written."""
    spec = WriteSpec(
        "stats", ("driver_id",), (ValueType.INT32,), ("rate",), (ValueType.DOUBLE,), "event_ts"
    )
    table = pa.table(
        {
            "driver_id": pa.array([1, 2**31 + 7], pa.int64()),
            "rate": [1.0, 2.0],
            "event_ts": pa.array([T0, T0], TS),
        }
    )
    client = redis.Redis.from_url(redis_url)
    keys = encode_entity_keys(
        [pa.array([1, -(2**31) + 7])], spec.join_keys, spec.join_key_types, "p"
    )
    client.delete(*keys)
    with pytest.raises(InvalidEntityError, match=r"'driver_id' holds 2147483655.*INT32"):
        write_batches(client, spec, table.to_batches(), project="p")
    assert client.exists(*keys) == 0
    client.close()


class _RepliesHeldBack:
    """A loopback proxy to Redis that, once the client has sent writes (``HSET``), holds
    Redis's replies back until the client sends its next read (``EXISTS``): a Redis whose
    answers take long to arrive. It gives up after ``patience`` seconds and records it."""

    def __init__(self, redis_url: str, patience: float = 3.0) -> None:
        address = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
        self._upstream = (address["host"], address["port"])
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._writes = threading.Event()
        self._read_behind = threading.Event()
        self._patience = patience
        self.waited_out = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        client, _ = self._listener.accept()
        self._listener.close()
        server = socket.create_connection(self._upstream)
        threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
        self._replies(server, client)

    def _requests(self, client: socket.socket, server: socket.socket) -> None:
        since_writes = b""  # the tail of what the client sent since its first HSET
        while data := client.recv(65536):
            if not self._writes.is_set() and b"HSET" in data:
                data_after = data[data.index(b"HSET") :]
                self._writes.set()
            else:
                data_after = data
            if self._writes.is_set():
                if b"EXISTS" in since_writes + data_after:
                    self._read_behind.set()
                since_writes = (since_writes + data_after)[-8:]
            server.sendall(data)

    def _replies(self, server: socket.socket, client: socket.socket) -> None:
        while data := server.recv(65536):
            if self._writes.is_set() and not self._read_behind.is_set():
                self.waited_out = not self._read_behind.wait(self._patience) or self.waited_out
            client.sendall(data)


def test_the_next_chunks_read_goes_out_behind_the_writes_without_waiting_for_their_replies(
    redis_url: str,
) -> None:
    """Each chunk of a bulk write costs one round trip, not two: chunk 2's read of the
    stored times is sent right behind chunk 1's writes, before their replies are in."""
    proxy = _RepliesHeldBack(redis_url)
    client = redis.Redis(host="127.0.0.1", port=proxy.port)
    stats = write_batches(
        client, COMPOUND, _compound_rows(4).to_batches(), project="p", chunk_rows=2
    )
    assert not proxy.waited_out
    assert (stats.rows_in, stats.rows_written) == (4, 4)
    assert redis.Redis.from_url(redis_url).dbsize() == 4
    client.close()


def _compound_rows(n: int) -> pa.Table:
    return pa.table(
        {
            "shop": list(range(n)),
            "item": ["x"] * n,
            "price": [float(i) for i in range(n)],
            "event_ts": pa.array([T0 + timedelta(seconds=i) for i in range(n)], TS),
        }
    )


def test_a_redis_refusing_writes_mid_bulk_write_raises_and_a_rerun_converges(
    redis_server_factory: Callable[..., EmbeddedRedis],
) -> None:
    """Writes refused from the first chunk on (maxmemory reached as it goes out): the
    error replies, read while the next chunk's read is already behind them, fail the
    write, and the same write once Redis has room stores the rest."""
    server = redis_server_factory(persistent=False)
    client, admin = redis.Redis.from_url(server.url), redis.Redis.from_url(server.url)
    chunks: list[int] = []

    def refuse_after_the_first_chunk(done: int) -> None:
        chunks.append(done)
        if len(chunks) == 1:
            admin.config_set("maxmemory", 1)

    table = _compound_rows(6)
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            write_batches(
                client, COMPOUND, table.to_batches(), project="p", chunk_rows=2,
                progress=refuse_after_the_first_chunk,
            )  # fmt: skip
    finally:
        admin.config_set("maxmemory", 0)
    # Chunk 1 was handed to the writer before the refusal: stored whole, or not at all.
    stored = client.dbsize()
    assert stored in (0, 2)
    rerun = write_batches(client, COMPOUND, table.to_batches(), project="p", chunk_rows=2)
    assert (rerun.rows_in, rerun.rows_written) == (6, 6 - stored)
    assert client.dbsize() == 6
    client.close()
    admin.close()
