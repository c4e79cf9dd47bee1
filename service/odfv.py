"""On-demand feature views on the online path, computed as Feast's server does.

The transformation gets a table of the join keys, the request data and the source
features (Python values, timestamps as datetimes), so a UDF sees what it sees under
``feast serve``. Python-mode views run through the view's own ``transform_dict``, and each
output goes through Feast's own conversion for its schema type (an int where the schema
says Float64 comes back 7.0, as ``feast serve`` answers it); under full feature names the
UDF's short output names are taken too (Feast drops those features from its answer).
Pandas-mode views take Feast's ``transform_arrow`` steps without its per-call overhead:
the source features under both their short and ``view__feature`` names (the aliases are
worked out once per plan, in :class:`OdfvStep`), one Arrow table converted to pandas on
the calling thread (Arrow's conversion threads cost more than they save on a few rows),
the UDF, and each output column converted back as ``Table.from_pandas`` would. A name
clash Feast would turn into a duplicate column goes through ``transform_arrow`` itself.

The input frame is built straight from NumPy when every column is one plain kind that
Arrow's inference would read the same way (floats, int64, bools, strings, no nulls):
half the cost of the Arrow round trip on the one-row lookups that dominate serving. Any
other column (nulls, timestamps, lists, mixed kinds) takes the Arrow route, so the frame
the UDF sees is always the one ``transform_arrow`` would build.

Where a transformation runs (a thread or the event loop) is :mod:`service.udf_runner`'s
choice; this module only computes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from feast import OnDemandFeatureView
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from foundation.errors import InvalidRequestError, show
from online_store.decode import native_value
from online_store.reader import ReadResult


@dataclass(frozen=True, slots=True)
class OdfvStep:
    """An on-demand view to run after the read."""

    view: OnDemandFeatureView
    inputs: tuple[tuple[str, str, ValueType], ...]  # (input column, read key, type)
    request_fields: tuple[str, ...]
    outputs: tuple[tuple[str, str], ...]  # (transformed column, response column key)
    # Pandas mode: the short name each ``view__feature`` input is also given (Feast's
    # preprocessing), and each output's (short, full) name (its postprocessing).
    aliases: tuple[tuple[str, str], ...] = ()
    output_names: tuple[tuple[str, str], ...] = ()
    # Read once per plan: Feast's view methods are type-checked (typeguard) on every call.
    request_schema: Mapping[str, ValueType] = field(default_factory=dict)
    output_types: Mapping[str, ValueType] = field(default_factory=dict)  # by short name
    # Request columns the UDF is handed too, as in Feast: every join key of the project and
    # the request data of every on-demand view of the request (see :func:`run_odfv`).
    given_keys: frozenset[str] = frozenset()
    given_fields: frozenset[str] = frozenset()
    # Whether the source features can go in under their short names (Feast's response
    # names without full feature names): no two alike, none a request column's name.
    shorts_fit: bool = False
    short_of: Mapping[str, str] = field(default_factory=dict)  # ``view__feature`` -> short

    @classmethod
    def build(
        cls,
        view: OnDemandFeatureView,
        inputs: tuple[tuple[str, str, ValueType], ...],
        outputs: tuple[tuple[str, str], ...],
        *,
        given_keys: frozenset[str] = frozenset(),
        given_fields: frozenset[str] = frozenset(),
    ) -> OdfvStep:
        """The step of ``view``: its request fields, aliases and names read from it once.

        ``inputs`` are in the order the UDF gets them (Feast's response order); the
        aliases Feast's preprocessing adds come after them, in the projections' order.
        """
        request_schema = view.get_request_data_schema()
        # Its own request data and entity columns at least (callers without a plan).
        given_fields = given_fields | frozenset(request_schema)
        given_keys = given_keys | frozenset(entity.name for entity in view.entity_columns)
        aliases = tuple(
            (feature.name, f"{projection.name}__{feature.name}")
            for projection in view.source_feature_view_projections.values()
            for feature in projection.features
        )
        prefix = view.projection.name_to_use()
        names = tuple((f.name, f"{prefix}__{f.name}") for f in view.features)
        # Every input feature's short name (its key's feature part).
        short_of = {column: key.partition(":")[2] for column, key, _ in inputs}
        shorts = set(short_of.values())
        return cls(
            view,
            inputs,
            tuple(request_schema),
            outputs,
            aliases,
            names,
            request_schema,
            {f.name: f.dtype.to_value_type() for f in view.features},
            given_keys,
            given_fields,
            len(shorts) == len(short_of)
            and given_keys.isdisjoint(shorts)
            and given_fields.isdisjoint(shorts),
            short_of,
        )

    @property
    def in_pandas(self) -> bool:
        """Whether the transformation is a pandas UDF (the costly kind, per call)."""
        return bool(self.view.mode == "pandas")


def _odfv_input_value(value: Any, value_type: ValueType) -> Any:
    # Feast hands on-demand transforms Python values: timestamps as datetimes.
    if value_type == ValueType.UNIX_TIMESTAMP and isinstance(value, int):
        return datetime.fromtimestamp(value, tz=UTC)
    return value


_NUMBERS = (ValueType.FLOAT, ValueType.DOUBLE)
_INTS = {ValueType.INT32: 2**31, ValueType.INT64: 2**63}


def _fits(value_type: ValueType | None, value: Any) -> bool:
    if value is None or value_type is None:
        return True
    if value_type in _NUMBERS:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if value_type in _INTS:
        bound = _INTS[value_type]
        return isinstance(value, int) and not isinstance(value, bool) and -bound <= value < bound
    if value_type == ValueType.STRING:
        return isinstance(value, str)
    if value_type == ValueType.BOOL:
        return isinstance(value, bool)
    return True  # other types go to the transformation as given


def _check_request_data(
    view: str, name: str, value_type: ValueType | None, values: Sequence[Any]
) -> None:
    """Refuse request data the request source's schema does not allow, before pandas sees it."""
    for row, value in enumerate(values):
        if not _fits(value_type, value):
            assert value_type is not None
            raise InvalidRequestError(
                f"request data {name!r} for on-demand feature view {view!r} expects "
                f"{value_type.name}, got {show(value)} at row {row}; send one "
                f"{value_type.name.lower()} per entity row",
                feature_view=view,
                field=name,
                row=row,
            )


def run_odfv(
    step: OdfvStep,
    entities: Mapping[str, Sequence[Any]],
    result: ReadResult,
    *,
    full_feature_names: bool,
) -> dict[str, list[Any]]:
    """Run one on-demand view on the read result, as Feast's online path does.

    Returns:
        Response column key -> values.

    Raises:
        InvalidRequestError: the transformation failed on this input (e.g. wrong
            request data types).
    """
    odfv = step.view
    schema = step.request_schema
    for name in step.request_fields:
        _check_request_data(odfv.name, name, schema.get(name), entities[name])
    # Feast's order: the request's join keys, then its request data (each in request
    # order), then the source features under the names its response gives them.
    columns: dict[str, list[Any]] = {}
    for name, given in entities.items():
        if name in step.given_keys:
            columns[name] = list(given)
    for name, given in entities.items():
        if name in step.given_fields:
            columns[name] = list(given)
    short_of = step.short_of if not full_feature_names and step.shorts_fit else {}
    for column, key, value_type in step.inputs:
        values = result.columns[key].values
        if value_type == ValueType.UNIX_TIMESTAMP:
            values = [_odfv_input_value(v, value_type) for v in values]
        columns[short_of.get(column, column)] = list(values)
    rows = len(next(iter(columns.values()), ()))
    try:
        if odfv.mode == "python":
            return _python_outputs(step, odfv.transform_dict(columns), rows)
        if step.in_pandas and step.aliases and _aliases_fit(step, columns):
            return _run_pandas(step, columns, full_feature_names, rows)
        table = odfv.transform_arrow(pa.Table.from_pydict(columns), full_feature_names)
        return {resp: table.column(t).to_pylist() for t, resp in step.outputs}
    except OutputFault as exc:
        raise InvalidRequestError(
            f"on-demand feature view {odfv.name!r} returned outputs that do not match its "
            f"schema: {exc}; the view's transformation needs fixing (then `feast apply`), "
            "not the request",
            feature_view=odfv.name,
        ) from exc
    except _INPUT_ERRORS as exc:
        raise InvalidRequestError(
            f"on-demand feature view {odfv.name!r} failed on this request: {exc}; check the "
            f"request data types against its request source schema "
            f"{ {k: v.name for k, v in schema.items()} }",
            feature_view=odfv.name,
        ) from exc
    except Exception as exc:  # the user's code may raise anything: never a 500
        raise InvalidRequestError(
            f"on-demand feature view {odfv.name!r} raised {type(exc).__name__}: {exc}; the "
            "view's transformation needs fixing (then `feast apply`)",
            feature_view=odfv.name,
        ) from exc


# What a UDF raises when the request's data is not what it expects (the usual cause).
_INPUT_ERRORS = (pa.ArrowException, TypeError, ValueError, KeyError, RecursionError)


class OutputFault(TypeError):
    """The transformation's result does not match the view's schema (its code's fault)."""


def _python_outputs(step: OdfvStep, out: Mapping[str, Any], rows: int) -> dict[str, list[Any]]:
    """A python-mode view's outputs as ``feast serve`` renders them (see the module notes)."""
    if not isinstance(out, Mapping):
        raise OutputFault(f"the transformation returned {type(out).__name__}, not a dict")
    short_of = {full: short for short, full in step.output_names}
    answer: dict[str, list[Any]] = {}
    for transformed, resp in step.outputs:
        short = short_of.get(transformed, transformed)
        if transformed not in out and short not in out:
            raise OutputFault(f"output {short!r} is missing (it returned {sorted(out)})")
        values = out[transformed] if transformed in out else out[short]
        _check_length(short, len(values) if isinstance(values, list) else 1, rows)
        try:
            protos = python_values_to_proto_values(
                values if isinstance(values, list) else [values], step.output_types[short]
            )
        except AssertionError as exc:  # Feast asserts on a value of the wrong type
            raise OutputFault(f"output {short!r} does not fit its schema type: {exc}") from exc
        # JSON-ready already (bytes in base64): the plan gives these columns no encoder.
        answer[resp] = [native_value(proto) for proto in protos]
    return answer


def _aliases_fit(step: OdfvStep, columns: Mapping[str, Any]) -> bool:
    """Whether every alias Feast would add is a new column (else Feast makes a duplicate)."""
    return all(short not in columns for short, full in step.aliases if full in columns)


def _fits_whole(value_type: ValueType | None, series: pd.Series[Any]) -> bool:
    """Whether a column's dtype alone shows every value fits (no per-value check)."""
    kind = series.dtype.kind
    return (value_type in _NUMBERS and kind in "fi") or (
        value_type == ValueType.INT64 and kind == "i"
    )


def _check_length(output: str, length: int, rows: int) -> None:
    if length != rows:
        raise OutputFault(f"output {output!r} has {length} values for {rows} entity rows")


def _run_pandas(
    step: OdfvStep, columns: dict[str, list[Any]], full_feature_names: bool, rows: int
) -> dict[str, list[Any]]:
    """``transform_arrow`` of a pandas-mode view, step by step (see the module notes)."""
    for short, full in step.aliases:  # Feast's preprocessing: the other name of each
        if full in columns:
            columns[short] = columns[full]
        elif short in columns:
            columns[full] = columns[short]
    frame = input_frame(columns)
    udf = step.view.feature_transformation.udf  # type: ignore[union-attr]
    out = udf(frame)
    if not isinstance(out, pd.DataFrame):
        raise OutputFault(f"the transformation returned {type(out).__name__}, not a DataFrame")
    # Feast renames short -> full names (full_feature_names) or full -> short (not).
    source: dict[str, str] = {}
    for short, full in step.output_names:
        if full_feature_names:
            source[full] = short if short in out.columns else full
        else:
            source[short] = full if full in out.columns else short
    short_of = {full: short for short, full in step.output_names}
    answer: dict[str, list[Any]] = {}
    for transformed, resp in step.outputs:
        column = source.get(transformed, transformed)
        if column not in out.columns:
            raise OutputFault(
                f"output {column!r} is missing (it returned columns {list(map(str, out.columns))})"
            )
        _check_length(column, len(out), rows)
        values = output_values(out[column])
        value_type = step.output_types.get(short_of.get(transformed, transformed))
        if value_type in _SCALARS and not _fits_whole(value_type, out[column]):
            values = _as_feast_converts(column, values, value_type)
        answer[resp] = values
    return answer


# Output types whose values Feast's conversion turns into one plain Python value each, and
# that value's type.
_NATIVE: dict[ValueType, type] = {
    ValueType.STRING: str, ValueType.INT32: int, ValueType.INT64: int,
    ValueType.FLOAT: float, ValueType.DOUBLE: float, ValueType.BOOL: bool,
}  # fmt: skip
_SCALARS = frozenset(_NATIVE)


def _as_feast_converts(column: str, values: list[Any], value_type: ValueType) -> list[Any]:
    """``values`` through Feast's conversion for the output's schema type, as ``feast serve``
    answers them (an int for a String output becomes ``"3"``, 2.5 for an Int64 one ``2``);
    a value Feast refuses (a string for a Float64 output) is the view's fault."""
    native = _NATIVE[value_type]
    if all(v is None or (type(v) is native and _fits(value_type, v)) for v in values):
        return values  # what Feast's conversion would give back (strings, bools, ints)
    try:
        protos = python_values_to_proto_values(values, value_type)
    except (AssertionError, TypeError, ValueError) as exc:
        bad = [v for v in values if not _fits(value_type, v)]
        held = f"holds {show(bad[0])}" if bad else f"cannot be converted ({exc})"
        raise OutputFault(f"output {column!r} is declared {value_type.name} but {held}") from exc
    return [None if (kind := p.WhichOneof("val")) is None else getattr(p, kind) for p in protos]


# Integers a double holds exactly: Arrow refuses to mix larger ones with floats.
_EXACT_IN_DOUBLE = 2**53


def _numpy_column(values: list[Any]) -> np.ndarray[Any, Any] | None:
    """``values`` as Arrow's inference and ``to_pandas`` would give them, or None for Arrow.

    None when Arrow's answer differs from a plain NumPy array: nulls, timestamps, lists,
    mixed kinds, integers outside int64 (Arrow makes them uint64 or refuses).
    """
    kinds = set(map(type, values))
    if kinds == {float}:
        return np.array(values, dtype=np.float64)
    if kinds == {int, float}:
        if any(type(v) is int and abs(v) > _EXACT_IN_DOUBLE for v in values):
            return None
        return np.array(values, dtype=np.float64)
    if kinds == {int}:
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            return None
    if kinds == {bool}:
        return np.array(values, dtype=np.bool_)
    if kinds == {str}:
        return np.array(values, dtype=object)
    return None


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
