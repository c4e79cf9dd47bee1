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

Every output then takes Feast's conversion for its schema type
(:mod:`service.odfv_outputs`), so the plan gives these columns no encoder. Feast itself
looks the type up by the short name only, so under full feature names it infers one from
the values (a Float32 output computed in float64 comes back as a double); we keep to the
schema either way. Where a transformation runs (a thread or the event loop) is
:mod:`service.udf_runner`'s choice; this module only computes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pandas as pd
import pyarrow as pa
from feast import OnDemandFeatureView
from feast.value_type import ValueType

from foundation.errors import InvalidRequestError, show
from online_store.reader import ReadResult
from service.odfv_frames import input_frame
from service.odfv_outputs import OutputFault, as_feast_answers, check_length, fits, pandas_output

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
        short_of = {column: key.rpartition(":")[2] for column, key, _ in inputs}
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


def _check_request_data(
    view: str, name: str, value_type: ValueType | None, values: Sequence[Any]
) -> None:
    """Refuse request data the request source's schema does not allow, before pandas sees it."""
    for row, value in enumerate(values):
        if not fits(value_type, value):
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
) -> Answer:
    """The view's transformation of ``columns`` (``rows`` entity rows, see :func:`udf_columns`).

    Raises:
        InvalidRequestError: the transformation failed on this input, or its outputs do
            not match the view's schema.
    """
    outcome = transform_shared(step, columns, (rows,), full_feature_names=full_feature_names)
    if isinstance(outcome[0], InvalidRequestError):
        raise outcome[0]
    return outcome[0]


def transform_shared(
    step: OdfvStep,
    columns: dict[str, list[Any]],
    sizes: Sequence[int],
    *,
    full_feature_names: bool,
) -> list[Answer | InvalidRequestError]:
    """One call of the view's transformation over the tables of several requests stacked in
    ``columns`` (``sizes`` entity rows each, in order).

    Returns:
        Each request's answer, its outputs converted apart as they would be alone (Feast
        checks a column's type by its first value), or the refusal of its outputs.

    Raises:
        InvalidRequestError: the call itself failed: the UDF raised, returned outputs of
            another shape or, for several requests, its rows in another order.
    """
    try:
        outputs = _outputs(step, columns, sum(sizes), full_feature_names, shared=len(sizes) > 1)
    except MemoryError:
        raise  # the worker's state, not the view's code
    except Exception as exc:  # the user's code may raise anything: never a 500
        raise _refusal(step, exc) from exc
    outcomes: list[Answer | InvalidRequestError] = []
    start = 0
    for size in sizes:
        try:
            outcomes.append({resp: answers(start, start + size) for resp, answers in outputs})
        except MemoryError:
            raise
        except Exception as exc:
            refusal = _refusal(step, exc)
            refusal.__cause__ = exc
            outcomes.append(refusal)
        start += size
    return outcomes


Answer = dict[str, list[Any]]
# An output of one call: its response column key, and its answers for rows [start, stop).
_Output = tuple[str, Callable[[int, int], list[Any]]]
# What a UDF raises when the request's data is not what it expects (the usual cause).
_INPUT_ERRORS = (pa.ArrowException, TypeError, ValueError, KeyError, RecursionError)


def _refusal(step: OdfvStep, exc: Exception) -> InvalidRequestError:
    """The 422 for an exception from the view's transformation or its outputs."""
    name = step.view.name
    if isinstance(exc, OutputFault):
        return InvalidRequestError(
            f"on-demand feature view {name!r} returned outputs that do not match its "
            f"schema: {exc}; the view's transformation needs fixing (then `feast apply`), "
            "not the request",
            feature_view=name,
        )
    if isinstance(exc, _INPUT_ERRORS):
        schema = {k: v.name for k, v in step.request_schema.items()}
        return InvalidRequestError(
            f"on-demand feature view {name!r} failed on this request: {exc}; check the "
            f"request data types against its request source schema {schema}",
            feature_view=name,
        )
    return InvalidRequestError(
        f"on-demand feature view {name!r} raised {type(exc).__name__}: {exc}; the "
        "view's transformation needs fixing (then `feast apply`)",
        feature_view=name,
    )


def _outputs(
    step: OdfvStep,
    columns: dict[str, list[Any]],
    rows: int,
    full_feature_names: bool,
    *,
    shared: bool,
) -> list[_Output]:
    odfv = step.view
    if odfv.mode == "python":
        return _python_outputs(step, odfv.transform_dict(columns), rows)
    if step.in_pandas and _aliases_fit(step, columns):
        return _run_pandas(step, columns, full_feature_names, rows, shared=shared)
    # A name clash Feast turns into a duplicate column (or a substrait view): its own steps.
    table = odfv.transform_arrow(pa.Table.from_pydict(columns), full_feature_names)
    return _arrow_outputs(step, table, rows)


def _answers(
    output: str, values: Sequence[Any], value_type: ValueType, start: int, stop: int
) -> list[Any]:
    return as_feast_answers(output, values[start:stop], value_type)


def _pandas_answers(
    column: str, series: pd.Series[Any], value_type: ValueType, start: int, stop: int
) -> list[Any]:
    part = series if start == 0 and stop == len(series) else series.iloc[start:stop]
    return pandas_output(column, part, value_type, stop - start)


def _python_outputs(step: OdfvStep, out: Mapping[str, Any], rows: int) -> list[_Output]:
    """A python-mode view's outputs as ``feast serve`` renders them (see the module notes)."""
    if not isinstance(out, Mapping):
        raise OutputFault(f"the transformation returned {type(out).__name__}, not a dict")
    outputs: list[_Output] = []
    for transformed, resp in step.outputs:
        short = step.output_short.get(transformed, transformed)
        if transformed not in out and short not in out:
            raise OutputFault(f"output {short!r} is missing (it returned {sorted(out)})")
        values = out[transformed] if transformed in out else out[short]
        values = values if isinstance(values, list) else [values]  # as Feast wraps one value
        check_length(short, len(values), rows)
        outputs.append((resp, partial(_answers, short, values, step.output_types[short])))
    return outputs


def _aliases_fit(step: OdfvStep, columns: Mapping[str, Any]) -> bool:
    """Whether every alias Feast would add is a new column (else Feast makes a duplicate)."""
    return all(short not in columns for short, full in step.aliases if full in columns)


def _run_pandas(
    step: OdfvStep,
    columns: dict[str, list[Any]],
    full_feature_names: bool,
    rows: int,
    *,
    shared: bool,
) -> list[_Output]:
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
    if shared and not out.index.equals(frame.index):
        # Rows dropped, added or reordered: which request each belongs to is unknown.
        raise OutputFault("the rows came back in another order than the input's")
    # Feast renames short -> full names (full_feature_names) or full -> short (not).
    source: dict[str, str] = {}
    for short, full in step.output_names:
        if full_feature_names:
            source[full] = short if short in out.columns else full
        else:
            source[short] = full if full in out.columns else short
    outputs: list[_Output] = []
    for transformed, resp in step.outputs:
        column = source.get(transformed, transformed)
        if column not in out.columns:
            raise OutputFault(
                f"output {column!r} is missing (it returned columns {list(map(str, out.columns))})"
            )
        value_type = step.output_types[step.output_short.get(transformed, transformed)]
        series = out[column]
        check_length(column, len(series), rows)
        outputs.append((resp, partial(_pandas_answers, column, series, value_type)))
    return outputs


def _arrow_outputs(step: OdfvStep, table: pa.Table, rows: int) -> list[_Output]:
    """The outputs of Feast's own ``transform_arrow``, answered as pandas outputs are."""
    outputs: list[_Output] = []
    for transformed, resp in step.outputs:
        if transformed not in table.column_names:
            raise OutputFault(
                f"output {transformed!r} is missing (it returned columns {table.column_names})"
            )
        values = table.column(transformed).to_numpy()
        check_length(transformed, len(values), rows)
        value_type = step.output_types[step.output_short.get(transformed, transformed)]
        outputs.append((resp, partial(_answers, transformed, values, value_type)))
    return outputs
