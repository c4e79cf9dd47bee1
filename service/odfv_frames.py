"""The pandas frames around a pandas-mode transformation, as Arrow would build them.

The input frame is built straight from NumPy when every column is one plain kind that
Arrow's inference would read the same way (floats, int64, bools, strings, no nulls), one
2-D block per dtype as Arrow lays them out, made the way pyarrow's ``to_pandas`` makes them
on pandas 2 (``make_block`` of ``pandas.core.internals.api``, pandas' interface for such
libraries, then a ``BlockManager`` and ``DataFrame._from_mgr``): a third of the Arrow round
trip's cost on the one-row lookups that dominate serving, and of ``pd.DataFrame``'s, which
checks and wraps every column. ``_from_mgr`` is not public API, so the two builds are
compared once, at import, on every kind of column; where they differ (or the names are
gone) ``pd.DataFrame`` builds the frame. Any
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

try:  # pandas' interface for libraries that build frames (pyarrow's to_pandas uses it)
    from pandas.core.internals import BlockManager
    from pandas.core.internals.api import make_block
except ImportError:  # pragma: no cover - a pandas without it: pd.DataFrame builds frames
    BlockManager = make_block = None  # type: ignore[assignment,misc]

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


def input_frame(columns: Mapping[str, list[Any]]) -> pd.DataFrame:
    """The frame ``pa.Table.from_pydict(columns).to_pandas()`` gives, built without Arrow
    when every column allows it (see the module notes)."""
    rows = len(next(iter(columns.values()), ()))
    dtypes = _numpy_dtypes(columns) if rows else None
    if dtypes is None:
        frame: pd.DataFrame = pa.Table.from_pydict(dict(columns)).to_pandas(use_threads=False)
        return frame
    if not _BLOCKS_AGREE or pd.get_option("future.infer_string"):
        # Strings as pandas' string dtype (an option a repo may turn on after this import):
        # the public constructor knows when.
        return _from_arrays(columns, dtypes, rows)
    return _from_blocks(columns, dtypes, rows)


def _numpy_dtypes(columns: Mapping[str, list[Any]]) -> list[Any] | None:
    """Each column's NumPy dtype when every column can skip Arrow, else None."""
    dtypes = []
    for values in columns.values():
        kinds = numpy_kinds(values)
        if kinds is None:
            return None
        dtypes.append(_NUMPY_DTYPES[kinds])
    return dtypes


def _from_arrays(columns: Mapping[str, list[Any]], dtypes: list[Any], rows: int) -> pd.DataFrame:
    """The frame of ``columns`` of ``dtypes`` by the public constructor: one array each."""
    pairs = zip(columns.items(), dtypes, strict=True)
    arrays = {name: np.array(values, dtype=dtype) for (name, values), dtype in pairs}
    return pd.DataFrame(arrays, index=pd.RangeIndex(rows), copy=False)


def _from_blocks(columns: Mapping[str, list[Any]], dtypes: list[Any], rows: int) -> pd.DataFrame:
    """The frame of ``columns`` of ``dtypes``: one 2-D block per dtype, made as pyarrow's
    ``to_pandas`` makes them (see the module notes)."""
    lists = list(columns.values())
    groups: dict[Any, list[int]] = {}
    for position, dtype in enumerate(dtypes):
        groups.setdefault(dtype, []).append(position)
    blocks = [
        make_block(np.array([lists[i] for i in positions], dtype=dtype), positions, ndim=2)
        for dtype, positions in groups.items()
    ]
    manager = BlockManager(blocks, [pd.Index(list(columns)), pd.RangeIndex(rows)])
    return pd.DataFrame._from_mgr(manager, manager.axes)  # type: ignore[attr-defined,no-any-return]


def _blocks_agree() -> bool:
    """Whether this pandas builds from blocks the frame ``pd.DataFrame`` builds (else the
    input frame is built by ``pd.DataFrame``): checked once, on every kind of column."""
    sample: dict[str, list[Any]] = {
        "a": [1.5, 2.0], "b": [1, 2], "c": ["x", "y"], "d": [True, False],
        "e": [3, 4.5], "f": [0.5, 1.0],
    }  # fmt: skip
    dtypes = _numpy_dtypes(sample)
    assert dtypes is not None  # every sample column is a plain kind
    try:
        built = _from_blocks(sample, dtypes, 2)
        expected = _from_arrays(sample, dtypes, 2)
        pd.testing.assert_frame_equal(built, expected, check_exact=True)
    except Exception:  # any failure means: build with the public constructor
        return False
    return True


_BLOCKS_AGREE = _blocks_agree()


_PLAIN_KINDS = frozenset("iub")  # integer, unsigned, bool: no NaN to turn into null


def output_values(series: pd.Series[Any]) -> list[Any]:
    """``pa.Array.from_pandas(series).to_pylist()``, via NumPy for NaN-free number columns."""
    array = series.to_numpy()
    kind = array.dtype.kind
    if kind in _PLAIN_KINDS or (array.dtype == np.float64 and not np.isnan(array).any()):
        return list(array.tolist())
    return list(pa.Array.from_pandas(series).to_pylist())
