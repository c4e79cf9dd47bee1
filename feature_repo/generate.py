"""Seeded, streaming generator for the ride-hailing example's Parquet sources.

    python feature_repo/generate.py --rows 100000 --seed 7 --out feature_repo/data

``--rows`` is the number of driver-stats rows (1k to 100M); the other sources scale
with it: customer profiles rows/4, driver x customer stats rows/2, trips (entity rows
for training sets, with labels) rows/10. Ten rows per driver, one a day like a daily
batch job's, each driver at its own hour, so each driver's newest row falls inside the
``driver_hourly_stats`` one-day TTL and a trip in the last nine days always finds one.

Trips look like a ride app's: most are between a driver and a rider who already rode
together (their ``driver_customer_stats`` exist), and the label (``accepted``) depends on
hidden per-driver, per-rider and per-pair traits that the feature values also reflect
(with noise), so a model trained on the features beats guessing.

The output is a pure function of (rows, seed, end): every chunk draws from its own
``numpy`` generator seeded with (seed, table, chunk index), and the writer streams
chunk by chunk, so memory stays flat at any scale. About 2% of feature values are
null and about 1% of rows are corrections: the same key and event time again with a
later created time and new values.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CHUNK_ROWS = 250_000
ROWS_PER_DRIVER = 10
NULL_FRACTION = 0.02
CORRECTION_FRACTION = 0.01
TIERS = np.array(["bronze", "silver", "gold", "platinum"])
ZONES = np.array(["downtown", "airport", "harbour", "university", "stadium", "old_town"])
# Trips fall in the last TRIP_DAYS days, inside every driver's ten daily rows.
TRIP_DAYS = 9
# Share of trips between a driver and a rider with no shared history (no pair stats).
NEW_PAIR_FRACTION = 0.08
_DAY_US = 86_400 * 1_000_000
_TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True, slots=True)
class Scale:
    """Row and entity counts derived from ``--rows``."""

    driver_rows: int
    seed: int = 0

    @property
    def drivers(self) -> int:
        return max(1, self.driver_rows // ROWS_PER_DRIVER)

    @property
    def customers(self) -> int:
        return max(1, self.driver_rows // 20)

    @property
    def customer_rows(self) -> int:
        return max(1, self.driver_rows // 4)

    @property
    def pair_rows(self) -> int:
        return max(1, self.driver_rows // 2)

    @property
    def trip_rows(self) -> int:
        return max(1, self.driver_rows // 10)

    @property
    def pairs(self) -> int:
        return max(1, self.pair_rows // 5)


def _uniform(seed: int, salt: int, index: np.ndarray) -> np.ndarray:
    """A uniform (0, 1) draw per entity index, the same in every chunk (splitmix64 hash).

    Traits must agree between tables written from different chunks and generators, so
    they are a hash of (seed, salt, entity) rather than draws from a chunk's generator.
    """
    with np.errstate(over="ignore"):
        x = index.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        x += np.uint64((seed * 1_000_003 + salt * 7919) & 0xFFFFFFFFFFFFFFFF)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def _trait(seed: int, salt: int, index: np.ndarray) -> np.ndarray:
    """A hidden, roughly standard-normal trait per entity (logistic via the inverse CDF)."""
    u = _uniform(seed, salt, index)
    return np.log(u / (1.0 - u)) * 0.55


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# Salts of the hidden traits: driver quality, rider reliability, pair affinity, and the
# hour of day at which each driver's daily stats row lands.
_DRIVER, _RIDER, _PAIR, _PHASE = 1, 2, 3, 4


def _pair_keys(pair: np.ndarray, scale: Scale) -> tuple[np.ndarray, np.ndarray]:
    """Driver and customer indexes of the pairs with shared history."""
    return pair % scale.drivers, (pair * 7919) % scale.customers


def driver_id(index: np.ndarray) -> np.ndarray:
    return (1001 + index).astype(np.int64)


def customer_id(index: np.ndarray) -> np.ndarray:
    return np.char.add("c_", np.char.zfill(index.astype(str), 7))


def _null_mask(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.random(n) < NULL_FRACTION


def _event_times(
    rng: np.random.Generator, rank: np.ndarray, end: datetime, step: timedelta
) -> np.ndarray:
    """Event time ``rank`` steps back from ``end``, jittered within the step (microseconds)."""
    end_us = int(end.timestamp() * 1_000_000)
    step_us = int(step.total_seconds() * 1_000_000)
    jitter = rng.integers(1, step_us, size=len(rank))
    return end_us - rank.astype(np.int64) * step_us - jitter


def _with_corrections(rng: np.random.Generator, table: pa.Table, redraw: pa.Table) -> pa.Table:
    """Append corrections: a sample of rows again, created one hour later, with new values.

    ``redraw`` is a freshly drawn table of the same shape whose feature columns supply
    the corrected values.
    """
    picked = np.flatnonzero(rng.random(table.num_rows) < CORRECTION_FRACTION)
    if len(picked) == 0:
        return table
    fixed = redraw.take(picked)
    original = table.take(picked)
    for name in ("event_timestamp", *[n for n in table.column_names if n.endswith("_id")]):
        fixed = fixed.set_column(fixed.schema.get_field_index(name), name, original[name])
    created = original["created"].cast(pa.int64()).to_numpy() + 3_600_000_000
    fixed = fixed.set_column(
        fixed.schema.get_field_index("created"), "created", pa.array(created).cast(_TS)
    )
    return pa.concat_tables([table, fixed])


def _driver_stats(
    rng: np.random.Generator, rows: np.ndarray, scale: Scale, end: datetime
) -> pa.Table:
    n = len(rows)
    driver = rows % scale.drivers
    # One row a day per driver at the driver's own time of day (a daily job per region),
    # jittered by up to ten minutes: consecutive rows are about a day apart, so the one-day
    # TTL covers nearly every instant, and the newest row is always less than a day old.
    # Every random draw below keeps the kind and order of the draws before traits existed,
    # so nulls and corrections (which tests pick rows by) land where they always did.
    phase = (_uniform(scale.seed, _PHASE, driver) * (_DAY_US - 1_200_000_000)).astype(np.int64)
    end_us = int(end.timestamp() * 1_000_000)
    rank = (rows // scale.drivers).astype(np.int64)
    jitter = rng.integers(1, _DAY_US, size=n) % 600_000_000 + 1
    ts = end_us - rank * _DAY_US - phase - jitter
    created = ts + rng.integers(0, 600_000_000, size=n)
    quality = _trait(scale.seed, _DRIVER, driver)

    def col(values: np.ndarray, typ: pa.DataType) -> pa.Array:
        return pa.array(values, type=typ, mask=_null_mask(rng, n))

    def measured(uniform: np.ndarray, spread: float) -> np.ndarray:
        """The driver's quality seen through noise (``uniform`` turned into a logistic)."""
        u = np.clip(uniform.astype(np.float64), 1e-6, 1 - 1e-6)
        return _sigmoid(quality + spread * np.log(u / (1.0 - u)))

    return pa.table(
        {
            "driver_id": pa.array(driver_id(driver)),
            "event_timestamp": pa.array(ts).cast(_TS),
            "created": pa.array(created).cast(_TS),
            "conv_rate": col(
                measured(rng.random(n, dtype=np.float32), 0.35).astype(np.float32), pa.float32()
            ),
            "acc_rate": col(
                measured(rng.random(n, dtype=np.float32), 0.45).astype(np.float32), pa.float32()
            ),
            "avg_daily_trips": col(rng.integers(0, 60, size=n), pa.int64()),
            "avg_rating": col(
                np.round(3.0 + 2.0 * measured((rng.uniform(3.0, 5.0, size=n) - 3.0) / 2.0, 0.4), 3),
                pa.float64(),
            ),
            "surge_multiplier": col(np.round(rng.uniform(1.0, 2.5, size=n), 2), pa.float64()),
            "is_active": col(rng.random(n) < 0.8, pa.bool_()),
        }
    )


def _customer_profile(
    rng: np.random.Generator, rows: np.ndarray, scale: Scale, end: datetime
) -> pa.Table:
    n = len(rows)
    ts = _event_times(rng, rows // scale.customers, end, timedelta(days=7))
    created = ts + rng.integers(0, 600_000_000, size=n)
    signup = ts // 1_000_000 - rng.integers(86_400, 86_400 * 1000, size=n)
    zone_counts = rng.integers(0, 4, size=n)
    zone_values = ZONES[rng.integers(0, len(ZONES), size=int(zone_counts.sum()))]
    offsets = np.concatenate([[0], np.cumsum(zone_counts)]).astype(np.int32)
    zones = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(zone_values, pa.string()), mask=pa.array(_null_mask(rng, n))
    )
    reliability = _trait(scale.seed, _RIDER, rows % scale.customers)

    def rating(uniform: np.ndarray) -> np.ndarray:
        """The rider's reliability seen through noise (same draw as before traits existed)."""
        u = np.clip((uniform - 3.0) / 2.0, 1e-6, 1 - 1e-6)
        return 3.0 + 2.0 * _sigmoid(reliability + 0.35 * np.log(u / (1.0 - u)))

    def col(values: np.ndarray, typ: pa.DataType) -> pa.Array:
        return pa.array(values, type=typ, mask=_null_mask(rng, n))

    return pa.table(
        {
            "customer_id": pa.array(customer_id(rows % scale.customers), pa.string()),
            "event_timestamp": pa.array(ts).cast(_TS),
            "created": pa.array(created).cast(_TS),
            "current_balance": col(np.round(rng.normal(50, 30, size=n), 2), pa.float64()),
            "lifetime_trip_count": col(rng.integers(0, 5000, size=n), pa.int64()),
            "avg_passenger_rating": col(
                rating(rng.uniform(3, 5, size=n)).astype(np.float32), pa.float32()
            ),
            "membership_tier": col(TIERS[rng.integers(0, len(TIERS), size=n)], pa.string()),
            "signup_ts": pa.array(signup * 1_000_000, mask=_null_mask(rng, n)).cast(_TS),
            "favourite_zones": zones,
        }
    )


def _pair_stats(
    rng: np.random.Generator, rows: np.ndarray, scale: Scale, end: datetime
) -> pa.Table:
    n = len(rows)
    pair = rows % scale.pairs
    drivers, customers = _pair_keys(pair, scale)
    ts = _event_times(rng, rows // scale.pairs, end, timedelta(days=6))
    created = ts + rng.integers(0, 600_000_000, size=n)
    affinity = _trait(scale.seed, _PAIR, pair)

    def col(values: np.ndarray, typ: pa.DataType) -> pa.Array:
        return pa.array(values, type=typ, mask=_null_mask(rng, n))

    # Pairs that get on ride together more often, tip more and rate each other higher. The
    # draws keep their kind and order from before traits existed (see _driver_stats).
    def together(raw: np.ndarray) -> np.ndarray:
        return np.round(np.exp(2.0 + 0.8 * affinity) * (0.5 + raw / 200.0)) + 1

    def tip(raw: np.ndarray) -> np.ndarray:
        return np.round(raw * 0.5 * np.exp(0.6 * affinity + 0.3), 2)

    def rating(raw: np.ndarray) -> np.ndarray:
        return np.clip(np.round(3.2 + 1.1 * affinity + 0.35 * (raw - 3)), 1, 5)

    return pa.table(
        {
            "driver_id": pa.array(driver_id(drivers)),
            "customer_id": pa.array(customer_id(customers), pa.string()),
            "event_timestamp": pa.array(ts).cast(_TS),
            "created": pa.array(created).cast(_TS),
            "trips_together": col(
                together(rng.integers(1, 200, size=n)).astype(np.int32), pa.int32()
            ),
            "avg_tip": col(tip(rng.exponential(2.0, size=n)), pa.float64()),
            "last_rating": col(rating(rng.integers(1, 6, size=n)).astype(np.int32), pa.int32()),
        }
    )


def _trips(rng: np.random.Generator, rows: np.ndarray, scale: Scale, end: datetime) -> pa.Table:
    n = len(rows)
    end_us = int(end.timestamp() * 1_000_000)
    ts = end_us - rng.integers(0, TRIP_DAYS * _DAY_US, size=n)
    distance = np.round(rng.gamma(2.0, 3.0, size=n), 2)
    # Most trips repeat a pair with history; the rest are first rides of a random pair.
    pair = rng.integers(0, scale.pairs, size=n)
    drivers, customers = _pair_keys(pair, scale)
    new = rng.random(n) < NEW_PAIR_FRACTION
    drivers = np.where(new, rng.integers(0, scale.drivers, size=n), drivers)
    customers = np.where(new, rng.integers(0, scale.customers, size=n), customers)
    # Acceptance follows the hidden traits the features measure, and shorter trips.
    logit = (
        0.9
        + 1.2 * _trait(scale.seed, _DRIVER, drivers)
        + 0.7 * _trait(scale.seed, _RIDER, customers)
        + 1.0 * np.where(new, 0.0, _trait(scale.seed, _PAIR, pair))
        - 0.08 * (distance - 6.0)
    )
    return pa.table(
        {
            "driver_id": pa.array(driver_id(drivers)),
            "customer_id": pa.array(customer_id(customers)),
            "event_timestamp": pa.array(ts).cast(_TS),
            "distance_km": pa.array(distance),
            "duration_min": pa.array(np.round(distance * rng.uniform(1.5, 4.0, size=n), 1)),
            "accepted": pa.array(rng.random(n) < _sigmoid(logit)),
        }
    )


Maker = Callable[[np.random.Generator, np.ndarray, Scale, datetime], pa.Table]

# name -> (table id for seeding, maker, row count, keeps corrections)
TABLES: dict[str, tuple[int, Maker, Callable[[Scale], int], bool]] = {
    "driver_stats": (1, _driver_stats, lambda s: s.driver_rows, True),
    "customer_profile": (2, _customer_profile, lambda s: s.customer_rows, True),
    "driver_customer_stats": (3, _pair_stats, lambda s: s.pair_rows, True),
    "trips": (4, _trips, lambda s: s.trip_rows, False),
}


def iter_chunks(name: str, *, rows: int, seed: int, end: datetime) -> Iterator[pa.Table]:
    """Yield the chunks of one source table, in order.

    Args:
        name: a key of ``TABLES``.
        rows: the driver-stats row count that sets the scale.
        seed: the random seed; same (rows, seed, end) gives the same rows.
        end: newest event time (aware UTC).
    """
    table_id, maker, count, corrections = TABLES[name]
    scale = Scale(rows, seed)
    total = count(scale)
    for chunk, start in enumerate(range(0, total, CHUNK_ROWS)):
        rng = np.random.default_rng([seed, table_id, chunk])
        index = np.arange(start, min(start + CHUNK_ROWS, total), dtype=np.int64)
        table = maker(rng, index, scale, end)
        if corrections:
            table = _with_corrections(rng, table, maker(rng, index, scale, end))
        yield table


def generate(out: Path, *, rows: int, seed: int, end: datetime) -> dict[str, int]:
    """Write every source as ``<out>/<name>.parquet``, streaming chunk by chunk.

    Returns:
        Rows written per table, corrections included.
    """
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    for name in TABLES:
        path = out / f"{name}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        writer: pq.ParquetWriter | None = None
        written[name] = 0
        try:
            for chunk in iter_chunks(name, rows=rows, seed=seed, end=end):
                if writer is None:
                    writer = pq.ParquetWriter(tmp, chunk.schema, compression="zstd")
                writer.write_table(chunk, row_group_size=CHUNK_ROWS)
                written[name] += chunk.num_rows
        finally:
            if writer is not None:
                writer.close()
        tmp.replace(path)  # readers never see a half-written file
    return written


def default_end() -> datetime:
    """The start of the current UTC hour: inside the one-day TTL, stable within the hour."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000, help="driver-stats rows (1k-100M)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--end",
        type=datetime.fromisoformat,
        default=None,
        help="newest event time (ISO 8601, UTC if naive)",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    counts = generate(args.out, rows=args.rows, seed=args.seed, end=args.end or default_end())
    for name, n in counts.items():
        print(f"wrote {n:>12,} rows to {args.out / (name + '.parquet')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
