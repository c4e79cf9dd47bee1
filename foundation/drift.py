"""Population stability index (PSI) between two profiles of the same feature.

``PSI = sum_i (a_i - e_i) * ln(a_i / e_i)`` over bins ``i``, where ``e_i`` is the share of
the reference (expected: a saved training dataset) in bin ``i`` and ``a_i`` the share of the
current data (actual: the latest materialized, pushed or on-demand window). Shares are
floored at :data:`EPSILON` so an empty bin does not make the index infinite. Customary
reading: below 0.1 stable, 0.1 to 0.25 moderate shift, above 0.25 significant shift.

Bins are the reference's: for a numeric column with range buckets, its 20 buckets with the
outer edges opened to infinity; for a column with one bucket per value, one bin per value
split at the midpoints between values. The current histogram is poured into those bins,
each range bucket spread uniformly over its width (the only assumption we make about the
data inside a bucket). For strings, the bins are the reference's top values plus one bin for
every other value.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from foundation.statistics import ColumnStats

EPSILON = 1e-4


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """The PSI of two distributions over the same bins (counts or shares).

    Raises:
        ValueError: the bin counts differ or a side is empty.
    """
    if len(expected) != len(actual) or not expected:
        raise ValueError(
            f"PSI needs two distributions over the same bins, got {len(expected)} and {len(actual)}"
        )
    e_total, a_total = float(sum(expected)), float(sum(actual))
    if e_total <= 0 or a_total <= 0:
        raise ValueError("PSI needs at least one row on each side")
    value = 0.0
    for e, a in zip(expected, actual, strict=True):
        e_share = max(e / e_total, EPSILON)
        a_share = max(a / a_total, EPSILON)
        value += (a_share - e_share) * math.log(a_share / e_share)
    return value


def _edges(reference: ColumnStats) -> list[float]:
    """Inner bin edges of a numeric reference (the outer bins are open)."""
    buckets = reference.histogram
    if all(b.lower == b.upper for b in buckets):
        values = [b.lower for b in buckets]
        return [(lo + hi) / 2 for lo, hi in itertools.pairwise(values)]
    return [b.upper for b in buckets[:-1]]


def _pour(edges: list[float], current: ColumnStats) -> list[float]:
    """The current histogram's counts distributed over the bins cut at ``edges``."""
    bins = [0.0] * (len(edges) + 1)
    bounds = [-math.inf, *edges, math.inf]
    for bucket in current.histogram:
        if bucket.upper <= bucket.lower:
            bins[_bin_of(edges, bucket.lower)] += bucket.count
            continue
        width = bucket.upper - bucket.lower
        for i in range(len(bins)):
            overlap = min(bucket.upper, bounds[i + 1]) - max(bucket.lower, bounds[i])
            if overlap > 0:
                bins[i] += bucket.count * overlap / width
    return bins


def _bin_of(edges: list[float], value: float) -> int:
    for i, edge in enumerate(edges):
        if value < edge:
            return i
    return len(edges)


def distributions(reference: ColumnStats, current: ColumnStats) -> tuple[list[float], list[float]]:
    """The reference's and the current profile's counts over the reference's bins.

    Raises:
        ValueError: the columns are of different kinds or cannot be compared.
    """
    if reference.kind != current.kind or reference.kind == "other":
        raise ValueError(
            f"cannot compare column {reference.name!r}: {reference.kind} vs {current.kind}"
        )
    if reference.kind == "numeric":
        if not reference.histogram:
            raise ValueError(f"column {reference.name!r} has no values in the reference")
        edges = _edges(reference)
        expected = _pour(edges, reference)
        return expected, _pour(edges, current)
    ref_top = dict(reference.top)
    cur_top = dict(current.top)
    ref_nonnull = reference.count - reference.nulls
    cur_nonnull = current.count - current.nulls
    expected = [float(c) for c in ref_top.values()]
    actual = [float(cur_top.get(v, 0)) for v in ref_top]
    expected.append(max(ref_nonnull - sum(expected), 0.0))
    actual.append(max(cur_nonnull - sum(actual), 0.0))
    return expected, actual


def column_psi(reference: ColumnStats, current: ColumnStats) -> float:
    """PSI of one feature between a reference profile and a current one.

    Raises:
        ValueError: the profiles cannot be compared (kinds differ, a side has no values).
    """
    expected, actual = distributions(reference, current)
    return psi(expected, actual)
