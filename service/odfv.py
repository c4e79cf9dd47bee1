"""On-demand feature views on the online path, computed as Feast's server does.

The transformation gets a table of the join keys, the request data and the source
features (Python values, timestamps as datetimes), through the view's own
``transform_arrow`` / ``transform_dict``, so a UDF sees what it sees under
``feast serve``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from feast import OnDemandFeatureView
from feast.value_type import ValueType

from foundation.errors import InvalidRequestError, show
from online_store.reader import ReadResult


@dataclass(frozen=True, slots=True)
class OdfvStep:
    """An on-demand view to run after the read."""

    view: OnDemandFeatureView
    inputs: tuple[tuple[str, str, ValueType], ...]  # (input column, read key, type)
    request_fields: tuple[str, ...]
    outputs: tuple[tuple[str, str], ...]  # (transformed column, response column key)


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
    columns: dict[str, list[Any]] = {}
    schema = odfv.get_request_data_schema()
    for name in step.request_fields:
        _check_request_data(odfv.name, name, schema.get(name), entities[name])
    for entity in odfv.entity_columns:
        if entity.name in entities:
            columns[entity.name] = list(entities[entity.name])
    for name in step.request_fields:
        columns[name] = list(entities[name])
    for column, key, value_type in step.inputs:
        values = result.columns[key].values
        if value_type == ValueType.UNIX_TIMESTAMP:
            values = [_odfv_input_value(v, value_type) for v in values]
        columns[column] = list(values)
    try:
        if odfv.mode == "python":
            out_dict = odfv.transform_dict(columns)
            return {resp: list(out_dict[t]) for t, resp in step.outputs}
        table = odfv.transform_arrow(pa.Table.from_pydict(columns), full_feature_names)
        return {resp: table.column(t).to_pylist() for t, resp in step.outputs}
    except (pa.ArrowException, TypeError, ValueError, KeyError, RecursionError) as exc:
        raise InvalidRequestError(
            f"on-demand feature view {odfv.name!r} failed on this request: {exc}; check the "
            f"request data types against its request source schema "
            f"{ {k: v.name for k, v in odfv.get_request_data_schema().items()} }",
            feature_view=odfv.name,
        ) from exc
