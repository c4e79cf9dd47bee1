"""On-demand feature views on the online path, computed as Feast's server does.

The transformation gets a table of the join keys, the request data and the source
features (Python values, timestamps as datetimes), so a UDF sees what it sees under
``feast serve``. Python-mode views run through the view's own ``transform_dict``; under
full feature names the UDF's short output names are taken too (Feast drops those
features from its answer). Pandas-mode views take Feast's ``transform_arrow`` steps
without its per-call overhead: the source features under both their short and
``view__feature`` names (the aliases are worked out once per plan, in :class:`OdfvStep`),
one frame as Arrow's ``to_pandas`` would build it on the calling thread
(:mod:`service.odfv_frames`), the UDF, and each output column read back as
``Table.from_pandas`` would. A name clash Feast would turn into a duplicate column goes
through ``transform_arrow`` itself.

Every output of either mode, whatever its type, then takes Feast's conversion for the
type its schema declares and comes back JSON-ready as ``feast serve`` renders it, so the
plan gives these columns no encoder (a float64 column of a Float64 output and an int64
one of an Int64 output are already that). Feast itself looks the type up by the short
name only, so under full feature names it infers one from the values (a Float32 output
computed in float64 comes back as a double); we keep to the schema either way.

Where a transformation runs (a thread or the event loop) is :mod:`service.udf_runner`'s
choice; this module only computes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
from feast import OnDemandFeatureView
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from foundation.errors import InvalidRequestError, show
from online_store.decode import native_value
from online_store.reader import ReadResult
from service.encoding import encode_floats
from service.odfv_frames import input_frame, output_values

# The on-demand view tag by which its owner lets concurrent lookups share one call of its
# transformation (``tags={ROW_WISE_TAG: "true"}``): see :mod:`service.udf_batches`.
ROW_WISE_TAG = "featurestore.row_wise"


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
    output_short: Mapping[str, str] = field(default_factory=dict)  # full output -> short
    # The view's owner says each output row depends on its input row alone (the
    # :data:`ROW_WISE_TAG` tag), so concurrent lookups may share one call.
    row_wise: bool = False

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
            {full: short for short, full in names},
            (view.tags or {}).get(ROW_WISE_TAG, "").strip().lower() == "true"
            and not getattr(view, "singleton", False),
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
    columns = udf_columns(step, entities, result, full_feature_names=full_feature_names)
    rows = len(next(iter(columns.values()), ()))
    return transform_columns(step, columns, rows, full_feature_names=full_feature_names)


def udf_columns(
    step: OdfvStep,
    entities: Mapping[str, Sequence[Any]],
    result: ReadResult,
    *,
    full_feature_names: bool,
) -> dict[str, list[Any]]:
    """The table the transformation is handed, by column name, in Feast's order.

    Raises:
        InvalidRequestError: request data the request source's schema does not allow.
    """
    schema = step.request_schema
    for name in step.request_fields:
        _check_request_data(step.view.name, name, schema.get(name), entities[name])
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
    return columns


def transform_columns(
    step: OdfvStep, columns: dict[str, list[Any]], rows: int, *, full_feature_names: bool
) -> dict[str, list[Any]]:
    """The view's transformation of ``columns`` (``rows`` entity rows, see :func:`udf_columns`).

    Raises:
        InvalidRequestError: the transformation failed on this input, or its outputs do
            not match the view's schema.
    """
    odfv = step.view
    try:
        if odfv.mode == "python":
            return _python_outputs(step, odfv.transform_dict(columns), rows)
        if step.in_pandas and _aliases_fit(step, columns):
            return _run_pandas(step, columns, full_feature_names, rows)
        # A name clash Feast turns into a duplicate column (or a substrait view): its own steps.
        table = odfv.transform_arrow(pa.Table.from_pydict(columns), full_feature_names)
        return _arrow_outputs(step, table, rows)
    except OutputFault as exc:
        raise InvalidRequestError(
            f"on-demand feature view {odfv.name!r} returned outputs that do not match its "
            f"schema: {exc}; the view's transformation needs fixing (then `feast apply`), "
            "not the request",
            feature_view=odfv.name,
        ) from exc
    except _INPUT_ERRORS as exc:
        schema = step.request_schema
        raise InvalidRequestError(
            f"on-demand feature view {odfv.name!r} failed on this request: {exc}; check the "
            f"request data types against its request source schema "
            f"{ {k: v.name for k, v in schema.items()} }",
            feature_view=odfv.name,
        ) from exc
    except MemoryError:
        raise  # the worker's state, not the view's code
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
    answer: dict[str, list[Any]] = {}
    for transformed, resp in step.outputs:
        short = step.output_short.get(transformed, transformed)
        if transformed not in out and short not in out:
            raise OutputFault(f"output {short!r} is missing (it returned {sorted(out)})")
        values = out[transformed] if transformed in out else out[short]
        values = values if isinstance(values, list) else [values]  # as Feast wraps one value
        _check_length(short, len(values), rows)
        answer[resp] = _as_feast_answers(short, values, step.output_types[short])
    return answer


def _as_feast_answers(output: str, values: Sequence[Any], value_type: ValueType) -> list[Any]:
    """``values`` through Feast's conversion for the output's schema type, JSON-ready as
    ``feast serve`` answers them: an int in a Float64 output is 7.0, in a String one "3",
    0.1 in a Float32 one 0.10000000149011612, bytes base64. A value Feast's conversion
    refuses (a string in a Float64 output) is the view's fault."""
    try:
        # A NumPy array as well as a list: Feast's own server hands it pandas outputs so.
        protos = python_values_to_proto_values(cast(list[Any], values), value_type)
    except Exception as exc:  # Feast asserts, or numpy/protobuf raise, on a misfit
        bad = [v for v in values if not _fits(value_type, v)]
        held = f"holds {show(bad[0])}" if bad else f"cannot be converted ({exc})"
        raise OutputFault(f"output {output!r} is declared {value_type.name} but {held}") from exc
    return [native_value(proto) for proto in protos]


def _aliases_fit(step: OdfvStep, columns: Mapping[str, Any]) -> bool:
    """Whether every alias Feast would add is a new column (else Feast makes a duplicate)."""
    return all(short not in columns for short, full in step.aliases if full in columns)


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
    answer: dict[str, list[Any]] = {}
    for transformed, resp in step.outputs:
        column = source.get(transformed, transformed)
        if column not in out.columns:
            raise OutputFault(
                f"output {column!r} is missing (it returned columns {list(map(str, out.columns))})"
            )
        value_type = step.output_types[step.output_short.get(transformed, transformed)]
        answer[resp] = _pandas_output(column, out[column], value_type, rows)
    return answer


def _pandas_output(
    column: str, series: pd.Series[Any], value_type: ValueType, rows: int
) -> list[Any]:
    """One pandas output column as ``feast serve`` answers it: Arrow's reading of the column
    (``Table.from_pandas``, NaN as null), then :func:`_as_feast_answers`. A column whose
    dtype is its output's type (:data:`_PLAIN`, or all strings) needs no conversion."""
    _check_length(column, len(series), rows)
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
    return _as_feast_answers(column, values, value_type)


# Output types whose column of this dtype Feast's conversion gives back as Arrow reads it.
_PLAIN = {ValueType.DOUBLE: np.dtype(np.float64), ValueType.FLOAT: np.dtype(np.float32),
          ValueType.INT64: np.dtype(np.int64), ValueType.INT32: np.dtype(np.int32),
          ValueType.BOOL: np.dtype(np.bool_)}  # fmt: skip


def _arrow_outputs(step: OdfvStep, table: pa.Table, rows: int) -> dict[str, list[Any]]:
    """The outputs of Feast's own ``transform_arrow``, answered as :func:`_pandas_output`
    answers them."""
    answer: dict[str, list[Any]] = {}
    for transformed, resp in step.outputs:
        if transformed not in table.column_names:
            raise OutputFault(
                f"output {transformed!r} is missing (it returned columns {table.column_names})"
            )
        values = table.column(transformed).to_numpy()
        _check_length(transformed, len(values), rows)
        value_type = step.output_types[step.output_short.get(transformed, transformed)]
        answer[resp] = _as_feast_answers(transformed, values, value_type)
    return answer
