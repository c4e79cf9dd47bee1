"""The pandas frames around a pandas-mode transformation, as Arrow would build them.

The input frame is built straight from NumPy when every column is one plain kind that
Arrow's inference would read the same way (floats, int64, bools, strings, no nulls):
half the cost of the Arrow round trip on the one-row lookups that dominate serving. Any
other column (nulls, timestamps, lists, mixed kinds) takes the Arrow route, so the frame
the UDF sees is always the one ``transform_arrow`` would build. An output column is read
back as ``Array.from_pandas`` reads it, via NumPy when no NaN can be among its values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

# Integers a double holds exactly: Arrow refuses to mix larger ones with floats.
_EXACT_IN_DOUBLE = 2**53
_INT64 = 2**63
_INTS, _INTS_AND_FLOATS = frozenset({int}), frozenset({int, float})

# The kinds of value a column may hold to be built straight from NumPy, and its dtype.
_NUMPY_DTYPES: dict[frozenset[type], Any] = {
    frozenset({float}): np.float64,
    frozenset({int, float}): np.float64,
    frozenset({int}): np.int64,
    frozenset({bool}): np.bool_,
    frozenset({str}): object,
}


def numpy_kinds(values: list[Any]) -> frozenset[type] | None:
    """The kinds of value in ``values`` when Arrow's inference and ``to_pandas`` would give
    them as a plain NumPy array does, else None (the Arrow route).

    None for nulls, timestamps, lists, mixed kinds, integers outside int64 (Arrow makes
    them uint64 or refuses) and, mixed with floats, integers a double does not hold exactly.
    """
    kinds = frozenset(map(type, values))
    if kinds not in _NUMPY_DTYPES:
        return None
    if kinds == _INTS_AND_FLOATS:
        if any(type(v) is int and abs(v) > _EXACT_IN_DOUBLE for v in values):
            return None
    elif kinds == _INTS and not all(-_INT64 <= v < _INT64 for v in values):
        return None
    return kinds


def _numpy_column(values: list[Any]) -> np.ndarray[Any, Any] | None:
    """``values`` as Arrow's inference and ``to_pandas`` would give them, or None for Arrow."""
    kinds = numpy_kinds(values)
    return None if kinds is None else np.array(values, dtype=_NUMPY_DTYPES[kinds])


def input_frame(columns: Mapping[str, list[Any]]) -> pd.DataFrame:
    """The frame ``pa.Table.from_pydict(columns).to_pandas()`` gives, built without Arrow
    when every column allows it (see the module notes)."""
    rows = len(next(iter(columns.values()), ()))
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for name, values in columns.items():
        array = _numpy_column(values) if rows else None
        if array is None:
            frame: pd.DataFrame = pa.Table.from_pydict(dict(columns)).to_pandas(use_threads=False)
            return frame
        arrays[name] = array
    return pd.DataFrame(arrays, index=pd.RangeIndex(rows), copy=False)


_PLAIN_KINDS = frozenset("iub")  # integer, unsigned, bool: no NaN to turn into null


def output_values(series: pd.Series[Any]) -> list[Any]:
    """``pa.Array.from_pandas(series).to_pylist()``, via NumPy for NaN-free number columns."""
    array = series.to_numpy()
    kind = array.dtype.kind
    if kind in _PLAIN_KINDS or (array.dtype == np.float64 and not np.isnan(array).any()):
        return list(array.tolist())
    return list(pa.Array.from_pandas(series).to_pylist())
