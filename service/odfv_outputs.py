"""An on-demand view's output values as ``feast serve`` answers them.

Every output, of either mode and any type, takes Feast's own conversion for the type its
schema declares (``python_values_to_proto_values``) and comes back JSON-ready as Feast's
server renders it (:func:`online_store.decode.native_value`). A pandas column already of its
output's type skips the per-value conversion: Arrow's reading of it is the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from foundation.errors import show
from online_store.decode import native_value
from service.encoding import encode_floats
from service.odfv_frames import output_values

_NUMBERS = (ValueType.FLOAT, ValueType.DOUBLE)
_INTS = {ValueType.INT32: 2**31, ValueType.INT64: 2**63}
# Output types whose column of this dtype Feast's conversion gives back as Arrow reads it.
_PLAIN = {ValueType.DOUBLE: np.dtype(np.float64), ValueType.FLOAT: np.dtype(np.float32),
          ValueType.INT64: np.dtype(np.int64), ValueType.INT32: np.dtype(np.int32),
          ValueType.BOOL: np.dtype(np.bool_)}  # fmt: skip


class OutputFault(TypeError):
    """The transformation's result does not match the view's schema (its code's fault)."""


def fits(value_type: ValueType | None, value: Any) -> bool:
    """Whether ``value`` is one Feast takes for ``value_type`` (None fits any type)."""
    if value is None or value_type is None:
        return True
    if value_type in _NUMBERS:
        # An int only within int64, as a UDF's input column holds it (JSON integers
        # have no bound).
        if isinstance(value, int) and not isinstance(value, bool):
            return -(2**63) <= value < 2**63
        return isinstance(value, float)
    if value_type in _INTS:
        bound = _INTS[value_type]
        return isinstance(value, int) and not isinstance(value, bool) and -bound <= value < bound
    if value_type == ValueType.STRING:
        return isinstance(value, str)
    if value_type == ValueType.BOOL:
        return isinstance(value, bool)
    return True  # other types go to the transformation as given


def as_feast_answers(output: str, values: Sequence[Any], value_type: ValueType) -> list[Any]:
    """``values`` through Feast's conversion for the output's schema type, JSON-ready as
    ``feast serve`` answers them: an int in a Float64 output is 7.0, in a String one "3",
    0.1 in a Float32 one 0.10000000149011612, bytes base64. A value Feast's conversion
    refuses (a string in a Float64 output) is the view's fault."""
    try:
        # A NumPy array as well as a list: Feast's own server hands it pandas outputs so.
        protos = python_values_to_proto_values(cast(list[Any], values), value_type)
    except Exception as exc:  # Feast asserts, or numpy/protobuf raise, on a misfit
        bad = [v for v in values if not fits(value_type, v)]
        held = f"holds {show(bad[0])}" if bad else f"cannot be converted ({exc})"
        raise OutputFault(f"output {output!r} is declared {value_type.name} but {held}") from exc
    return [native_value(proto) for proto in protos]


def check_length(output: str, length: int, rows: int) -> None:
    """Refuse an output of another length than the table's entity rows."""
    if length != rows:
        raise OutputFault(f"output {output!r} has {length} values for {rows} entity rows")


def pandas_output(
    column: str, series: pd.Series[Any], value_type: ValueType, rows: int
) -> list[Any]:
    """One pandas output column as ``feast serve`` answers it: Arrow's reading of the column
    (``Table.from_pandas``, NaN as null), then :func:`as_feast_answers`. A column whose
    dtype is its output's type (:data:`_PLAIN`, or all strings) needs no conversion."""
    check_length(column, len(series), rows)
    dtype = series.dtype
    if value_type in _PLAIN and dtype == _PLAIN[value_type]:
        values = output_values(series)
        return encode_floats(values) if value_type in _NUMBERS else values
    if value_type == ValueType.STRING and dtype == np.dtype(object):
        values = series.tolist()
        if all(type(v) is str for v in values):
            return values
    try:
        values = pa.Array.from_pandas(series).to_numpy(zero_copy_only=False)
    except (pa.ArrowException, OverflowError) as exc:  # kinds Arrow cannot hold in one column
        raise OutputFault(f"output {column!r} cannot be read as one column ({exc})") from exc
    return as_feast_answers(column, values, value_type)
