"""Distinct-value estimates for column statistics: HyperLogLog and the hashes it reads.

A HyperLogLog with 2**14 registers has a relative standard error of 1.04/sqrt(2**14) = 0.81%.
Registers of two sketches over disjoint rows merge by element-wise maximum, which is how
profiles computed on Spark executors combine on the driver.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

_HLL_P = 14
_HLL_M = 1 << _HLL_P
_REST_BITS = 64 - _HLL_P


class HyperLogLog:
    """HyperLogLog registers (2**14 of them) over 64-bit hashes; mergeable by ``np.maximum``."""

    def __init__(self) -> None:
        self.registers = np.zeros(_HLL_M, dtype=np.uint8)

    def add_hashes(self, hashes: np.ndarray[Any, np.dtype[np.uint64]]) -> None:
        if not len(hashes):
            return
        index = (hashes >> np.uint64(_REST_BITS)).astype(np.intp)
        rest = hashes & np.uint64((1 << _REST_BITS) - 1)
        # frexp gives the bit length of `rest` (exact: it is below 2**53); 0 has length 0.
        bit_length = np.frexp(rest.astype(np.float64))[1]
        rank = (_REST_BITS + 1 - bit_length).astype(np.uint8)
        np.maximum.at(self.registers, index, rank)

    def estimate(self) -> int:
        m = float(_HLL_M)
        alpha = 0.7213 / (1 + 1.079 / m)
        raw = alpha * m * m / float(np.sum(np.ldexp(1.0, -self.registers.astype(np.int32))))
        zeros = int(np.count_nonzero(self.registers == 0))
        if raw <= 2.5 * m and zeros:
            return round(m * math.log(m / zeros))
        return round(raw)


_HASHING = threading.Lock()
_hashing: duckdb.DuckDBPyConnection | None = None


def _close_hashing() -> None:
    """Close the hashing connection before a fork: a child that inherits a DuckDB database
    can neither close nor free it (the child would crash at its exit)."""
    global _hashing
    with _HASHING:
        if _hashing is not None:
            _hashing.close()
            _hashing = None


os.register_at_fork(before=_close_hashing)


def string_hashes(values: pa.Array) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """64-bit hashes of ``values`` by DuckDB's ``hash()``, without a Python object per value."""
    global _hashing
    with _HASHING:
        if _hashing is None:
            _hashing = duckdb.connect(config={"threads": 1})
        hashed = _hashing.from_arrow(pa.table({"v": values})).project("hash(v)").to_arrow_table()
    return np.asarray(hashed.column(0).to_numpy(), dtype=np.uint64)
