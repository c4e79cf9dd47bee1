"""Descriptive statistics of feature columns, computed batch by batch as the rows flow past.

Both stores profile data where it already streams: the materialization engine over the rows
it writes, the offline store over a window or a saved training dataset. The engine may not
import the offline store (layers), so the one implementation lives here, in the foundation.

Per column (:class:`ColumnStats`):

- ``count`` rows, ``nulls`` (NaN counts as null, as in pandas), ``completeness`` = share
  non-null;
- numeric columns: exact ``min``, ``max``, ``mean`` and sample standard deviation ``std``
  (ddof=1, as pandas), merged across batches with Chan et al.'s parallel formula;
- ``approx_distinct``: exact while a column has at most 20 distinct values (numeric) or while
  every distinct string is still tracked; otherwise a HyperLogLog estimate with 2**14
  registers over 64-bit hashes. Its relative standard error is 1.04/sqrt(2**14) = 0.81%:
  about two estimates in three are within 0.8% and practically all within 2.5%.
  (DuckDB's ``approx_count_distinct`` is also HyperLogLog, but its state cannot be merged
  across the batches of a stream from Python, so we keep our own registers.)
- numeric histogram: one bucket per value with exact counts when the column has at most 20
  distinct values; else 20 equal-width buckets over [min, max]. Those counts are exact when
  the column has at most :data:`RESERVOIR` non-null values and otherwise estimated from a
  uniform reservoir sample of that size, scaled so they still sum to the non-null count;
  ``histogram_exact`` says which.
- strings and booleans: ``top`` values with their counts, most frequent first and equal
  counts in value order (exact unless more than
  :data:`STRING_TRACK_LIMIT` distinct values forced pruning; ``top_exact`` says which).

Histogram counts always sum to ``count - nulls``. Profilers of disjoint parts of the rows
merge (:meth:`TableProfiler.merge`) into the profile of the whole: counts, moments, extremes,
exact histograms and HyperLogLog registers exactly; reservoir samples by drawing from each
part in proportion to its size.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from foundation.hyperloglog import HyperLogLog, string_hashes

BUCKETS = 20
RESERVOIR = 65_536
STRING_TRACK_LIMIT = 10_000
_STRING_KEEP = STRING_TRACK_LIMIT // 5
TOP_K = 10

Kind = Literal["numeric", "string", "other"]


@dataclass(frozen=True, slots=True)
class Bucket:
    """Histogram bucket ``[lower, upper]``; ``lower == upper`` for a one-value bucket."""

    lower: float
    upper: float
    count: int


@dataclass(frozen=True, slots=True)
class ColumnStats:
    """The statistics of one column (see the module docstring for exact semantics)."""

    name: str
    kind: Kind
    dtype: str
    count: int
    nulls: int
    completeness: float
    approx_distinct: int | None = None
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    histogram: list[Bucket] = field(default_factory=list)
    histogram_exact: bool = True
    top: list[tuple[str, int]] = field(default_factory=list)
    top_exact: bool = True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (inverse of :meth:`from_dict`)."""
        out = asdict(self)
        out["top"] = [[v, c] for v, c in self.top]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ColumnStats:
        """Rebuild from :meth:`to_dict` output."""
        values = dict(data)
        values["histogram"] = [Bucket(**b) for b in values.get("histogram", [])]
        values["top"] = [(str(v), int(c)) for v, c in values.get("top", [])]
        return cls(**values)


def _kind(dtype: pa.DataType) -> Kind:
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "numeric"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_boolean(dtype):
        return "string"
    return "other"


class _Column:
    """Mergeable running statistics of one column."""

    def __init__(self, name: str, dtype: pa.DataType, seed: int) -> None:
        self.name = name
        self.dtype = dtype
        self.kind = _kind(dtype)
        self.count = 0
        self.nulls = 0
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min: float | None = None
        self.max: float | None = None
        self.hll = HyperLogLog()
        self.values: Counter[Any] | None = Counter()
        self.sample = np.empty(0, dtype=np.float64)
        self.rng = np.random.default_rng(seed)
        self.pruned = False

    def update(self, array: pa.Array | pa.ChunkedArray) -> None:
        self.count += len(array)
        if self.kind == "numeric":
            self._numeric(array)
        elif self.kind == "string":
            self._string(array)
        else:
            self.nulls += array.null_count

    def _numeric(self, array: pa.Array | pa.ChunkedArray) -> None:
        raw = pc.drop_null(array)
        if pa.types.is_decimal(raw.type):
            raw = pc.cast(raw, pa.float64())
        native = np.asarray(raw.to_numpy(zero_copy_only=False))
        if native.dtype.kind == "f":
            native = native[~np.isnan(native)]
        self.nulls += len(array) - len(native)
        if not len(native):
            return
        x = native.astype(np.float64, copy=False)
        n, mean_b = len(x), float(x.mean())
        m2_b = float(np.square(x - mean_b).sum())
        total = self.n + n
        delta = mean_b - self.mean
        self.mean += delta * n / total
        self.m2 += m2_b + delta * delta * self.n * n / total
        self.n = total
        lo, hi = float(x.min()), float(x.max())
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)
        self.hll.add_hashes(pd.util.hash_array(native))
        if self.values is not None:
            # Hash passes first (a prefix, then all): most columns have too many distinct
            # values for exact counts, and then no sort is needed.
            if len(pd.unique(x[:1024])) > BUCKETS or len(pd.unique(x)) > BUCKETS:
                self.values = None
            else:
                uniq, counts = np.unique(x, return_counts=True)
                self.values.update(dict(zip(uniq.tolist(), counts.tolist(), strict=True)))
                if len(self.values) > BUCKETS:
                    self.values = None
        self._reservoir(x)

    def _reservoir(self, x: np.ndarray[Any, np.dtype[np.float64]]) -> None:
        seen_before = self.n - len(x)
        room = RESERVOIR - len(self.sample)
        if room > 0:
            self.sample = np.concatenate([self.sample, x[:room]])
            x, seen_before = x[room:], seen_before + min(room, len(x))
        if not len(x):
            return
        # Algorithm R, vectorised: item t (1-based overall) replaces slot j ~ U[0, t) if j < k.
        positions = np.arange(seen_before + 1, seen_before + len(x) + 1, dtype=np.float64)
        slots = np.floor(self.rng.random(len(x)) * positions).astype(np.int64)
        keep = slots < RESERVOIR
        self.sample[slots[keep]] = x[keep]

    def _string(self, array: pa.Array | pa.ChunkedArray) -> None:
        self.nulls += array.null_count
        present = pc.drop_null(array)
        if not len(present):
            return
        if pa.types.is_boolean(present.type):
            present = pc.cast(present, pa.string())
        counts = pa.RecordBatch.from_struct_array(pc.value_counts(present))
        self.hll.add_hashes(string_hashes(counts.column(0)))
        if self.pruned or counts.num_rows > STRING_TRACK_LIMIT:
            # Counts are estimates from here on: only a batch's heaviest values can still
            # reach the top list, so only those cross into Python.
            self.pruned = True
            heaviest = pc.select_k_unstable(
                counts, k=_STRING_KEEP, sort_keys=[("counts", "descending")]
            )
            counts = counts.take(heaviest)
        assert self.values is not None
        self.values.update(
            dict(zip(counts.column(0).to_pylist(), counts.column(1).to_pylist(), strict=True))
        )
        self._prune()

    def _prune(self) -> None:
        assert self.values is not None
        if len(self.values) > STRING_TRACK_LIMIT:
            # Keep the heavy hitters; counts of pruned values are lost, so say so.
            self.values = Counter(dict(self.values.most_common(_STRING_KEEP)))
            self.pruned = True

    def merge(self, other: _Column) -> None:
        """Add ``other``'s rows (the same column profiled elsewhere, e.g. on a Spark executor)."""
        self.count += other.count
        self.nulls += other.nulls
        np.maximum(self.hll.registers, other.hll.registers, out=self.hll.registers)
        if self.kind == "string":
            assert self.values is not None
            assert other.values is not None
            self.values.update(other.values)
            self.pruned = self.pruned or other.pruned
            self._prune()
            return
        if self.kind != "numeric" or not other.n:
            return
        total = self.n + other.n
        delta = other.mean - self.mean
        self.mean += delta * other.n / total
        self.m2 += other.m2 + delta * delta * self.n * other.n / total
        assert other.min is not None
        assert other.max is not None
        self.min = other.min if self.min is None else min(self.min, other.min)
        self.max = other.max if self.max is None else max(self.max, other.max)
        if self.values is not None and other.values is not None:
            self.values.update(other.values)
            if len(self.values) > BUCKETS:
                self.values = None
        else:
            self.values = None
        self.sample = self._merged_sample(other, total)
        self.n = total

    def _merged_sample(self, other: _Column, total: int) -> np.ndarray[Any, np.dtype[np.float64]]:
        """A uniform sample of both columns' values: all of them while they fit, else each
        side's share drawn from its own uniform sample in proportion to its row count."""
        if total <= RESERVOIR:
            return np.concatenate([self.sample, other.sample])
        mine = round(RESERVOIR * self.n / total)
        parts = []
        for sample, k in ((self.sample, mine), (other.sample, RESERVOIR - mine)):
            parts.append(sample[self.rng.choice(len(sample), size=k, replace=False)])
        return np.concatenate(parts)

    def finish(self) -> ColumnStats:
        nonnull = self.count - self.nulls
        completeness = nonnull / self.count if self.count else 0.0
        base: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "dtype": str(self.dtype),
            "count": self.count,
            "nulls": self.nulls,
            "completeness": completeness,
        }
        if self.kind == "numeric":
            distinct = len(self.values) if self.values is not None else self.hll.estimate()
            histogram, exact = self._histogram()
            return ColumnStats(
                **base,
                approx_distinct=distinct,
                min=self.min,
                max=self.max,
                mean=self.mean if self.n else None,
                std=math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else None,
                histogram=histogram,
                histogram_exact=exact,
            )
        if self.kind == "string":
            assert self.values is not None
            distinct = self.hll.estimate() if self.pruned else len(self.values)
            # Ties by value: the same rows give the same list whatever their order.
            ranked = heapq.nsmallest(
                TOP_K, self.values.items(), key=lambda vc: (-vc[1], str(vc[0]))
            )
            top = [(str(v), int(c)) for v, c in ranked]
            return ColumnStats(**base, approx_distinct=distinct, top=top, top_exact=not self.pruned)
        return ColumnStats(**base)

    def _histogram(self) -> tuple[list[Bucket], bool]:
        if self.values is not None:
            return [Bucket(v, v, int(c)) for v, c in sorted(self.values.items())], True
        assert self.min is not None
        assert self.max is not None
        counts, edges = np.histogram(self.sample, bins=BUCKETS, range=(self.min, self.max))
        exact = self.n <= RESERVOIR
        if not exact:
            counts = _scale(counts, self.n)
        return [
            Bucket(float(edges[i]), float(edges[i + 1]), int(counts[i])) for i in range(BUCKETS)
        ], exact


def _scale(
    counts: np.ndarray[Any, np.dtype[np.int64]], total: int
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Scale sample counts to ``total`` by largest remainder, so they sum to it exactly."""
    share = counts * (total / counts.sum())
    floor: np.ndarray[Any, np.dtype[np.int64]] = np.floor(share).astype(np.int64)
    short = total - int(floor.sum())
    order = np.argsort(-(share - floor), kind="stable")
    floor[order[:short]] += 1
    return floor


class TableProfiler:
    """Statistics of the named columns of a stream of record batches.

    Args:
        columns: the columns to profile; columns a batch lacks are skipped in it.
        seed: seeds the reservoir sample, so a rerun over the same rows gives the same numbers.
    """

    def __init__(self, columns: Sequence[str] | None = None, *, seed: int = 0) -> None:
        self._wanted = list(columns) if columns is not None else None
        self._seed = seed
        self._columns: dict[str, _Column] = {}
        self.rows = 0

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Add a batch's rows."""
        self.rows += batch.num_rows
        names = self._wanted if self._wanted is not None else batch.schema.names
        for name in names:
            idx = batch.schema.get_field_index(name)
            if idx < 0:
                continue
            column = self._columns.get(name)
            if column is None:
                column = _Column(name, batch.schema.field(idx).type, self._seed)
                self._columns[name] = column
            column.update(batch.column(idx))

    def watch(self, batches: Iterable[pa.RecordBatch]) -> Iterable[pa.RecordBatch]:
        """Yield ``batches`` unchanged, profiling each on the way."""
        for batch in batches:
            self.update(batch)
            yield batch

    def merge(self, other: TableProfiler) -> None:
        """Add the rows ``other`` profiled (a profiler of the same columns run elsewhere and
        sent here pickled, as the Spark engine's executors do)."""
        self.rows += other.rows
        for name, column in other._columns.items():
            mine = self._columns.get(name)
            if mine is None:
                self._columns[name] = column
            else:
                mine.merge(column)

    def finish(self) -> list[ColumnStats]:
        """The statistics of every column seen, in the order first seen."""
        return [c.finish() for c in self._columns.values()]


def profile(table: pa.Table, columns: Sequence[str] | None = None) -> list[ColumnStats]:
    """Statistics of a whole table's columns (all of them by default)."""
    profiler = TableProfiler(columns)
    for batch in table.to_batches():
        profiler.update(batch)
    if not table.num_rows:
        profiler.update(table)
    return profiler.finish()
