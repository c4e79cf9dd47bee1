"""The atomic write path (pushes, write-to-online-store): concurrent writers, the
stored-time comparison in Redis against Python's rule, and the bytes it writes.

Concurrent writers of the same entities: the newest event time always wins.

Each writer thread pushes rows for the same few drivers, many times over, with event
times that grow round by round and overlap between writers, as several producers (or
--workers) pushing at once would. Whatever the interleaving, every driver must end with
the row of the greatest event time written for it, and its features must be that row's
(never an older row over a newer one, never a mix of two rows).
"""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import redis
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from online_store.codec import ts_field
from online_store.decode import timestamp_nanos
from online_store.keys import encode_entity_keys
from online_store.reader import ReadPlan, ViewReadSpec
from online_store.write_plan import WriteSpec
from online_store.writer import write_arrow, write_batches
from tests.online_store.views import INT, T0, driver_view, rows

DRIVERS = (1, 2, 3)
WRITERS = 6
ROUNDS = 150


def test_concurrent_writes_keep_the_newest_row(redis_url: str) -> None:
    view = driver_view()
    newest: dict[int, int] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        client = redis.Redis.from_url(redis_url)
        try:
            for round_ in range(ROUNDS):
                # Times grow round by round (as a stream's do), the writers' interleaved,
                # so the writers keep overtaking each other's stored rows.
                base = (ROUNDS - round_) * WRITERS * 10
                minutes = [base + rng.randrange(WRITERS * 10) for _ in DRIVERS]
                # rate and label both carry the row's own minute: a torn row would differ
                items = [
                    (d, float(m), str(m), T0 - timedelta(minutes=m))
                    for d, m in zip(DRIVERS, minutes, strict=True)
                ]
                write_arrow(client, view, rows(*items), project="p")
                with lock:
                    for d, m in zip(DRIVERS, minutes, strict=True):
                        newest[d] = min(newest.get(d, m), m)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors

    plan = ReadPlan.compile("p", [ViewReadSpec("stats", ("driver_id",), INT, ("rate", "label"), 0)])
    client = redis.Redis.from_url(redis_url)
    result = plan.read(client, {"driver_id": list(DRIVERS)}, now=T0)
    client.close()
    rate, label = result.columns["stats:rate"], result.columns["stats:label"]
    for j, d in enumerate(DRIVERS):
        m = newest[d]
        assert rate.event_timestamps[j] == T0 - timedelta(minutes=m), d
        assert rate.values[j] == float(m)
        assert label.values[j] == str(m)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Lua's doubles hold microseconds exactly for these years (see online_store.writer).
SECONDS = st.integers(-8_000_000_000, 8_000_000_000)


def _key(driver: int) -> bytes:
    spec = WriteSpec.from_feature_view(driver_view())
    column = pa.array([driver], pa.int64())
    return encode_entity_keys([column], spec.join_keys, spec.join_key_types, "p", num_rows=1)[0]


def _timestamp(micros: int) -> bytes:
    seconds, rest = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=rest * 1000).SerializeToString()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    old_seconds=SECONDS,
    old_nanos=st.one_of(st.just(0), st.integers(0, 999_999_999)),
    new_micros=st.one_of(
        SECONDS.map(lambda s: s * 1_000_000), st.integers(-8 * 10**15, 8 * 10**15)
    ),
)
def test_stored_time_comparison_matches_python(
    redis_url: str, old_seconds: int, old_nanos: int, new_micros: int
) -> None:
    """Any stored Timestamp (as Feast may write it: nanoseconds, before 1970, zero)
    against any new time: written exactly when the Python rule of the bulk path says."""
    client = redis.Redis.from_url(redis_url)
    key, ts_name = _key(1), ts_field("stats")
    stored = Timestamp(seconds=old_seconds, nanos=old_nanos).SerializeToString()
    client.delete(key)
    client.hset(key, ts_name, stored)
    when = EPOCH + timedelta(microseconds=new_micros)
    write_arrow(client, driver_view(), rows((1, 2.0, "new", when)), project="p")
    after = client.hget(key, ts_name)
    client.close()
    old_ns = timestamp_nanos(stored) if stored else 0
    written = old_ns == 0 or new_micros * 1000 > old_ns
    assert after == (_timestamp(new_micros) if written else stored)


def test_atomic_and_bulk_paths_write_the_same_bytes(redis_url: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    bulk, atomic = redis.Redis.from_url(f"{base}/3"), redis.Redis.from_url(f"{base}/4")
    bulk.flushdb()
    atomic.flushdb()
    atomic.script_flush()  # the first atomic write finds the script missing and loads it
    rng = random.Random(7)
    items = [
        (
            rng.randrange(50),
            rng.choice([None, rng.random()]),
            rng.choice([None, "", "x" * rng.randrange(200)]),
            T0 - timedelta(microseconds=rng.randrange(10**12)),
        )
        for _ in range(400)
    ]
    view = driver_view()
    spec = WriteSpec.from_feature_view(view)
    for part in (items[:150], items[150:], items[:10]):  # later parts find keys stored
        table = rows(*part)
        write_batches(bulk, spec, table.to_batches(), project="p", key_ttl_seconds=500)
        write_arrow(atomic, view, table, project="p", key_ttl_seconds=500)
    keys = sorted(bulk.scan_iter())
    assert keys == sorted(atomic.scan_iter())
    assert len(keys) == 50
    for key in keys:
        assert bulk.hgetall(key) == atomic.hgetall(key)
        assert 0 < atomic.ttl(key) <= 500
    bulk.close()
    atomic.close()
