"""Column statistics equal pandas/DuckDB on the same rows; PSI equals a hand computation."""

from __future__ import annotations

import math
import pickle

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from foundation import statistics
from foundation.drift import column_psi, psi
from foundation.statistics import Bucket, ColumnStats, TableProfiler, profile


def _frame(rows: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.normal(50.0, 12.0, rows)
    amount[rng.random(rows) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "amount": amount,
            "trips": pd.array(rng.integers(0, 5, rows), dtype="Int64"),
            "city": rng.choice(["paris", "lyon", "nice", None], rows, p=[0.5, 0.3, 0.15, 0.05]),
        }
    )


def _batches(frame: pd.DataFrame, size: int) -> list[pa.RecordBatch]:
    return pa.Table.from_pandas(frame, preserve_index=False).to_batches(max_chunksize=size)


def test_streamed_statistics_equal_pandas_on_the_same_rows() -> None:
    frame = _frame(20_000)
    profiler = TableProfiler()
    for batch in _batches(frame, 3_001):  # odd batch size: the merge across batches counts
        profiler.update(batch)
    stats = {c.name: c for c in profiler.finish()}

    amount = stats["amount"]
    assert amount.count == len(frame)
    assert amount.nulls == int(frame["amount"].isna().sum())
    assert amount.completeness == frame["amount"].notna().mean()
    assert amount.min == frame["amount"].min()
    assert amount.max == frame["amount"].max()
    assert amount.mean == pytest.approx(frame["amount"].mean(), rel=1e-12)
    assert amount.std == pytest.approx(frame["amount"].std(), rel=1e-12)
    assert len(amount.histogram) == statistics.BUCKETS
    assert sum(b.count for b in amount.histogram) == amount.count - amount.nulls
    # Under the reservoir size the 20 equal-width buckets are exact: numpy agrees.
    expected, _ = np.histogram(frame["amount"].dropna(), bins=20, range=(amount.min, amount.max))
    assert [b.count for b in amount.histogram] == expected.tolist()
    assert amount.histogram_exact

    trips = stats["trips"]
    assert trips.mean == pytest.approx(frame["trips"].mean(), rel=1e-12)
    assert trips.std == pytest.approx(frame["trips"].std(), rel=1e-12)
    # Five distinct values: one bucket each with exact counts.
    assert [(b.lower, b.count) for b in trips.histogram] == [
        (float(v), int(c)) for v, c in frame["trips"].value_counts().sort_index().items()
    ]
    assert trips.approx_distinct == 5

    city = stats["city"]
    assert city.nulls == int(frame["city"].isna().sum())
    assert city.approx_distinct == 3
    assert city.top == [(str(v), int(c)) for v, c in frame["city"].value_counts().items()]


def test_large_column_distinct_is_within_the_documented_error_and_histogram_sums() -> None:
    rows = 200_000
    rng = np.random.default_rng(3)
    values = rng.integers(0, 80_000, rows).astype(np.float64)
    table = pa.table({"x": values, "s": [f"u{v}" for v in rng.integers(0, 30_000, rows)]})
    stats = {c.name: c for c in profile(table)}
    con = duckdb.connect()
    con.register("t", table)
    exact_x, exact_s = con.execute("SELECT count(DISTINCT x), count(DISTINCT s) FROM t").fetchone()  # type: ignore[misc]
    # Documented: relative standard error 0.81%, practically always within 2.5%.
    assert abs(stats["x"].approx_distinct - exact_x) / exact_x < 0.025
    assert abs(stats["s"].approx_distinct - exact_s) / exact_s < 0.025
    x = stats["x"]
    assert not x.histogram_exact  # more rows than the reservoir: estimated, but sums exactly
    assert sum(b.count for b in x.histogram) == rows
    true_counts, _ = np.histogram(values, bins=20, range=(x.min, x.max))
    for bucket, true in zip(x.histogram, true_counts, strict=True):
        assert abs(bucket.count - true) / true < 0.05
    assert not stats["s"].top_exact


@pytest.mark.parametrize("parts", [2, 5])
def test_profilers_of_parts_merge_into_the_profile_of_the_whole(parts: int) -> None:
    """What the Spark engine does: executors profile their partitions, the driver merges the
    pickled profilers. Exact statistics equal one profiler over every row."""
    frame = _frame(12_000)
    whole = {c.name: c for c in profile(pa.Table.from_pandas(frame, preserve_index=False))}
    merged = TableProfiler()
    for part in np.array_split(np.arange(len(frame)), parts):
        profiler = TableProfiler()
        for batch in _batches(frame.iloc[part], 2_500):
            profiler.update(batch)
        merged.merge(pickle.loads(pickle.dumps(profiler)))
    assert merged.rows == len(frame)
    got = {c.name: c for c in merged.finish()}
    for name in ("amount", "trips", "city"):
        ours, want = got[name], whole[name]
        assert (ours.count, ours.nulls, ours.completeness) == (
            want.count,
            want.nulls,
            want.completeness,
        )
        assert ours.approx_distinct == want.approx_distinct
        assert ours.min == want.min
        assert ours.max == want.max
        assert ours.top == want.top
        if want.mean is not None:
            assert ours.mean == pytest.approx(want.mean, rel=1e-12)
            assert ours.std == pytest.approx(want.std, rel=1e-12)
        # Under the reservoir size every value is kept: the histograms are exact and equal.
        assert ours.histogram == want.histogram
        assert ours.histogram_exact


def test_merged_large_profiles_keep_the_documented_error() -> None:
    rng = np.random.default_rng(11)
    values = rng.normal(0.0, 1.0, 300_000)
    merged = TableProfiler()
    for part in np.array_split(values, 3):
        profiler = TableProfiler()
        profiler.update(pa.table({"x": part}))
        merged.merge(profiler)
    [x] = merged.finish()
    assert x.count == len(values)
    assert x.mean == pytest.approx(values.mean(), abs=1e-12)
    assert x.std == pytest.approx(values.std(ddof=1), rel=1e-12)
    assert sum(b.count for b in x.histogram) == len(values)
    true_counts, _ = np.histogram(values, bins=20, range=(x.min, x.max))
    for bucket, true in zip(x.histogram, true_counts, strict=True):
        if true > 5_000:  # the well-populated buckets, where a sample's error is small
            assert abs(bucket.count - true) / true < 0.05
    assert not x.histogram_exact


def test_empty_and_all_null_columns() -> None:
    table = pa.table(
        {"x": pa.array([None, None], pa.float64()), "s": pa.array([None, None], pa.string())}
    )
    stats = {c.name: c for c in profile(table)}
    assert stats["x"].completeness == 0.0
    assert stats["x"].mean is None
    assert stats["x"].histogram == []
    assert stats["s"].top == []
    empty = profile(pa.table({"x": pa.array([], pa.float64())}))
    assert empty[0].count == 0


def test_column_stats_round_trip_through_json_dicts() -> None:
    stats = profile(pa.table({"x": [1.0, 2.0, 2.0], "s": ["a", "b", "b"]}))
    assert [ColumnStats.from_dict(s.to_dict()) for s in stats] == stats


def _reference_psi(expected: list[float], actual: list[float]) -> float:
    e = np.array(expected) / sum(expected)
    a = np.array(actual) / sum(actual)
    return float(np.sum((a - e) * np.log(a / e)))


def test_psi_equals_the_textbook_formula_on_a_hand_made_case() -> None:
    # Ten deciles of a training set against a shifted serving window.
    expected = [10, 10, 10, 10, 10, 10, 10, 10, 10, 10]
    actual = [5, 6, 8, 9, 10, 10, 11, 12, 14, 15]
    # Hand computation of the first term: (0.05 - 0.1) * ln(0.05 / 0.1) = 0.034657...
    assert psi(expected, actual) == pytest.approx(_reference_psi(expected, actual), rel=1e-12)
    # Summing the ten terms by hand: 0.034657 + 0.020433 + 0.004463 + 0.001054 + 0 + 0
    # + 0.000953 + 0.003646 + 0.013459 + 0.020273 = 0.098938.
    assert psi(expected, actual) == pytest.approx(0.098938, abs=1e-6)
    assert psi(expected, expected) == 0.0


def _numeric(buckets: list[Bucket]) -> ColumnStats:
    total = sum(b.count for b in buckets)
    return ColumnStats("x", "numeric", "double", total, 0, 1.0, histogram=buckets)


def test_column_psi_uses_the_reference_buckets_and_spreads_the_current_ones() -> None:
    reference = _numeric([Bucket(0, 1, 50), Bucket(1, 2, 50)])
    # Same edges: the plain formula.
    same = _numeric([Bucket(0, 1, 20), Bucket(1, 2, 80)])
    assert column_psi(reference, same) == pytest.approx(_reference_psi([50, 50], [20, 80]))
    # One current bucket [0.5, 1.5] of 100 rows splits half and half: no drift.
    assert column_psi(reference, _numeric([Bucket(0.5, 1.5, 100)])) == pytest.approx(0.0)
    # Values beyond the reference range land in its outer bins.
    far = column_psi(reference, _numeric([Bucket(5, 6, 100)]))
    assert far == pytest.approx(_reference_psi([50, 50], [1e-4 * 100, 100]), rel=1e-3)
    assert far > 0.25


def test_string_psi_bins_are_reference_top_values_plus_other() -> None:
    ref = ColumnStats("s", "string", "string", 100, 0, 1.0, top=[("a", 60), ("b", 40)])
    cur = ColumnStats("s", "string", "string", 100, 0, 1.0, top=[("c", 50), ("a", 30), ("b", 20)])
    expected = _reference_psi([60, 40, 1e-2], [30, 20, 50])
    assert column_psi(ref, cur) == pytest.approx(expected, rel=1e-2)
    assert math.isfinite(column_psi(ref, cur))


def test_heavy_hitters_keep_exact_counts_among_too_many_distinct_strings() -> None:
    """Past the tracking limit the top list is an estimate, but a value frequent in every
    batch keeps its exact count and rank, across batches and across merged profilers."""
    rng = np.random.default_rng(5)
    merged = TableProfiler()
    expected: dict[str | None, int] = {}
    for _profiler in range(2):
        profiler = TableProfiler()
        for _ in range(3):
            rare = [f"r{v}" for v in rng.integers(0, 10**9, 2 * statistics.STRING_TRACK_LIMIT)]
            hot = ["hot"] * 700 + ["warm"] * 300 + [None] * 50
            values = rare + hot
            rng.shuffle(values)  # type: ignore[arg-type]
            profiler.update(pa.table({"s": pa.array(values, pa.string())}))
            for v in values:
                expected[v] = expected.get(v, 0) + 1
        merged.merge(pickle.loads(pickle.dumps(profiler)))
    (s,) = merged.finish()
    assert not s.top_exact
    assert s.top[:2] == [("hot", 6 * 700), ("warm", 6 * 300)]
    assert s.nulls == 6 * 50
    distinct = len(expected) - 1  # None is a null, not a value
    assert s.approx_distinct is not None
    assert abs(s.approx_distinct - distinct) / distinct < 0.025
