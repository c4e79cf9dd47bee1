"""Seeded, streaming generator for the ride-hailing example's Parquet sources.

    python feature_repo/generate.py --rows 100000 --seed 7 --out feature_repo/data

``--rows`` is the number of driver-stats rows (1k to 100M); the other sources scale
with it: customer profiles rows/4, driver x customer stats rows/2, trips (entity rows
for training sets, with labels) rows/10. Ten rows per driver, spread back in time
from ``--end`` one day apart, so each driver's newest row falls inside the
``driver_hourly_stats`` one-day TTL.

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
_TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True, slots=True)
class Scale:
    """Row and entity counts derived from ``--rows``."""

    driver_rows: int

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
    ts = _event_times(rng, rows // scale.drivers, end, timedelta(days=1))
    created = ts + rng.integers(0, 600_000_000, size=n)

    def col(values: np.ndarray, typ: pa.DataType) -> pa.Array:
        return pa.array(values, type=typ, mask=_null_mask(rng, n))

    return pa.table(
        {
            "driver_id": pa.array(driver_id(rows % scale.drivers)),
            "event_timestamp": pa.array(ts).cast(_TS),
            "created": pa.array(created).cast(_TS),
            "conv_rate": col(rng.random(n, dtype=np.float32), pa.float32()),
            "acc_rate": col(rng.random(n, dtype=np.float32), pa.float32()),
            "avg_daily_trips": col(rng.integers(0, 60, size=n), pa.int64()),
            "avg_rating": col(np.round(rng.uniform(3.0, 5.0, size=n), 3), pa.float64()),
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

    def col(values: np.ndarray, typ: pa.DataType) -> pa.Array:
        return pa.array(values, type=typ, mask=_null_mask(rng, n))

    return pa.table(
        {
            "customer_id": pa.array(customer_id(rows % scale.customers), pa.string()),
            "event_timestamp": pa.array(ts).cast(_TS),
            "created": pa.array(created).cast(_TS),
            "current_balance": col(np.round(rng.normal(50, 30, size=n), 2), pa.float64()),
            "lifetime_trip_count": col(rng.integers(0, 5000, size=n), pa.int64()),
            "avg_passenger_rating": col(rng.uniform(3, 5, size=n).astype(np.float32), pa.float32()),
            "membership_tier": col(TIERS[rng.integers(0, len(TIERS), size=n)], pa.string()),
            "signup_ts": pa.array(signup * 1_000_000, mask=_null_mask(rng, n)).cast(_TS),
            "favourite_zones": zones,
        }
    )


def _pair_stats(
    rng: np.random.Generator, rows: np.ndarray, scale: Scale, end: datetime
) -> pa.Table:
    n = len(rows)
    pair = rows % max(1, scale.pair_rows // 5)
    ts = _event_times(rng, rows // max(1, scale.pair_rows // 5), end, timedelta(days=6))
    created = ts + rng.integers(0, 600_000_000, size=n)

    def col(values: np.ndarray, typ: pa.DataType) -> pa.Array:
        return pa.array(values, type=typ, mask=_null_mask(rng, n))

    return pa.table(
        {
            "driver_id": pa.array(driver_id(pair % scale.drivers)),
            "customer_id": pa.array(customer_id((pair * 7919) % scale.customers), pa.string()),
            "event_timestamp": pa.array(ts).cast(_TS),
            "created": pa.array(created).cast(_TS),
            "trips_together": col(rng.integers(1, 200, size=n).astype(np.int32), pa.int32()),
            "avg_tip": col(np.round(rng.exponential(2.0, size=n), 2), pa.float64()),
            "last_rating": col(rng.integers(1, 6, size=n).astype(np.int32), pa.int32()),
        }
    )


def _trips(rng: np.random.Generator, rows: np.ndarray, scale: Scale, end: datetime) -> pa.Table:
    n = len(rows)
    end_us = int(end.timestamp() * 1_000_000)
    ts = end_us - rng.integers(0, 14 * 86_400 * 1_000_000, size=n)
    distance = np.round(rng.gamma(2.0, 3.0, size=n), 2)
    return pa.table(
        {
            "driver_id": pa.array(driver_id(rng.integers(0, scale.drivers, size=n))),
            "customer_id": pa.array(customer_id(rng.integers(0, scale.customers, size=n))),
            "event_timestamp": pa.array(ts).cast(_TS),
            "distance_km": pa.array(distance),
            "duration_min": pa.array(np.round(distance * rng.uniform(1.5, 4.0, size=n), 1)),
            "accepted": pa.array(rng.random(n) < 0.7),
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
    scale = Scale(rows)
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
