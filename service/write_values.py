"""Checks of written values: the request's shape, then each JSON value becomes its exact
Arrow value or a 422.

Values are kept exactly or refused: integers outside their type's range, floats that would
overflow float32, NaN and infinities (Feast stores NaN as null; JSON cannot carry
infinities back), nulls inside lists (Feast's lists are protobuf repeated fields, which
hold no nulls), timestamps outside years 1..9999 once in UTC, and (when a limit is
given) event times too far ahead of the server clock.

Integer join keys are read as lookups read them (:func:`service.entity_values.integer_value`):
a decimal string (``"1001"``) or an integral float (``1001.0``) is that integer, so every
key a lookup takes can be written; ``"6.5"``, ``6.5``, ``true`` and values outside the
type's range are refused like any other bad cell. Features stay strict: an integer
feature takes JSON integers only.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from foundation.errors import (
    InvalidTimestampError,
    RequestTooLargeError,
    SchemaMismatchError,
    show,
)
from service.entity_values import integer_value

_TS = pa.timestamp("us", tz="UTC")
_SCALARS: dict[ValueType, pa.DataType] = {
    ValueType.INT32: pa.int32(),
    ValueType.INT64: pa.int64(),
    ValueType.FLOAT: pa.float32(),
    ValueType.DOUBLE: pa.float64(),
    ValueType.BOOL: pa.bool_(),
    ValueType.STRING: pa.string(),
    ValueType.BYTES: pa.binary(),
    ValueType.UNIX_TIMESTAMP: _TS,
}
_LISTS = {
    ValueType.INT32_LIST: ValueType.INT32,
    ValueType.INT64_LIST: ValueType.INT64,
    ValueType.FLOAT_LIST: ValueType.FLOAT,
    ValueType.DOUBLE_LIST: ValueType.DOUBLE,
    ValueType.BOOL_LIST: ValueType.BOOL,
    ValueType.STRING_LIST: ValueType.STRING,
    ValueType.BYTES_LIST: ValueType.BYTES,
    ValueType.UNIX_TIMESTAMP_LIST: ValueType.UNIX_TIMESTAMP,
}
_INT_RANGE = {ValueType.INT32: 2**31, ValueType.INT64: 2**63}
_FLOAT32_MAX = 3.4028234663852886e38


class _Bad(Exception):
    """A value that does not fit; turned into a SchemaMismatchError naming the cell.

    Args:
        expected: what the cell should hold.
        fix: how to send it, when more than "fix the value" helps.
    """

    def __init__(self, expected: str, fix: str | None = None) -> None:
        super().__init__(expected)
        self.fix = fix


def _key_scalar(vt: ValueType, v: Any) -> Any:
    """An integer join key's value: its lossless forms read as the integer, then checked."""
    try:
        v = integer_value(v)
    except ValueError as exc:
        raise _Bad("an integer", fix=str(exc)) from None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Bad("an integer", fix='send a JSON number or a decimal string such as "1001"')
    return _check_scalar(vt, v)


def _check_scalar(vt: ValueType, v: Any) -> Any:
    if vt in _INT_RANGE:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Bad("an integer")
        if not -_INT_RANGE[vt] <= v < _INT_RANGE[vt]:
            raise _Bad(f"an integer in the {vt.name} range")
        return v
    if vt in (ValueType.FLOAT, ValueType.DOUBLE):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _Bad("a number")
        try:
            number = float(v)
        except OverflowError:  # an integer beyond float64
            raise _Bad(f"a number within the {vt.name} range") from None
        if not math.isfinite(number):
            # Feast stores NaN as null and JSON cannot carry infinities back unchanged.
            raise _Bad("a finite number (NaN and infinities do not read back unchanged)")
        if vt == ValueType.FLOAT and abs(number) > _FLOAT32_MAX:
            # Cast to float32 it would become infinity.
            raise _Bad(f"a number within the FLOAT (float32) range, |x| <= {_FLOAT32_MAX:.8g}")
        return number
    if vt == ValueType.BOOL:
        if not isinstance(v, bool):
            raise _Bad("true or false")
        return v
    if vt == ValueType.STRING:
        if not isinstance(v, str):
            raise _Bad("a string")
        return v
    if vt == ValueType.BYTES:
        if not isinstance(v, str):
            raise _Bad("a base64 string")
        try:
            return base64.b64decode(v, validate=True)
        except binascii.Error:
            raise _Bad("a base64 string") from None
    if vt == ValueType.UNIX_TIMESTAMP:
        return _timestamp(v)[0]
    raise _Bad(f"a type this server can write (not {vt.name})")


def _to_utc(ts: datetime) -> datetime:
    """An aware datetime in UTC, or a refusal when UTC falls outside years 1..9999.

    Raises:
        _Bad: e.g. ``0001-01-01T00:00:00+14:00`` is before year 1 in UTC.
    """
    try:
        return ts.astimezone(UTC)
    except OverflowError:
        raise _Bad("a time between years 1 and 9999 once converted to UTC") from None


def _timestamp(v: Any) -> tuple[datetime, bool]:
    """(aware UTC datetime, whether the input was naive)."""
    if isinstance(v, bool):
        raise _Bad("an RFC 3339 timestamp or epoch seconds")
    if isinstance(v, datetime):
        return (v.replace(tzinfo=UTC), True) if v.tzinfo is None else (v.astimezone(UTC), False)
    if isinstance(v, int | float):
        try:
            return datetime.fromtimestamp(v, tz=UTC), False
        except (ValueError, OverflowError, OSError):  # NaN, inf, beyond year 9999
            raise _Bad("epoch seconds within the datetime range") from None
    if isinstance(v, str):
        try:
            ts = datetime.fromisoformat(v)
        except ValueError:
            raise _Bad("an RFC 3339 timestamp like 2026-11-26T10:00:00Z") from None
        if ts.tzinfo is None:
            return ts.replace(tzinfo=UTC), True
        return _to_utc(ts), False
    raise _Bad("an RFC 3339 timestamp or epoch seconds")


def _json_text(v: Any) -> Any:
    return v if v is None or isinstance(v, str) else json.dumps(v)


def _feast_column(name: str, values: Sequence[Any], vt: ValueType, *, view: str) -> pa.Array:
    """A column of a type without a hand-written check (Map, Json, Struct, sets, ...).

    The values go into Arrow the way ``feast serve``'s push builds its frame (inferred from
    the JSON values), and Feast's own conversion must accept them, so what we store is
    what stock Feast would store; anything it refuses is a 422 naming the column.
    """
    cells = list(values)
    # Keep each JSON document as written (an inferred struct would add missing keys).
    if vt == ValueType.JSON:
        cells = [_json_text(v) for v in cells]
    elif vt == ValueType.JSON_LIST:
        cells = [[_json_text(x) for x in v] if isinstance(v, list) else v for v in cells]
    try:
        arr = pa.array(cells)
        python_values_to_proto_values(arr.to_numpy(zero_copy_only=False), vt)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise SchemaMismatchError(
            f"column {name!r} of feature view {view!r} expects values of Feast type "
            f"{vt.name}, and Feast cannot convert what was sent ({exc}); send values of that "
            "type (an object for Map/Struct, any JSON for Json, a list for Array/Set)",
            column=name,
            expected=vt.name,
        ) from None
    return arr


def column(
    name: str,
    values: Sequence[Any],
    vt: ValueType,
    *,
    view: str,
    nullable: bool,
    join_key: bool = False,
) -> pa.Array:
    """One column of a write as its Arrow array, or a 422 naming the first bad cell.

    Args:
        name: the column.
        values: its JSON values.
        vt: the Feast type it is declared with.
        view: the feature view, for messages.
        nullable: whether nulls are kept (else refused).
        join_key: the column is a join key: an INT32/INT64 key also takes the forms a
            lookup takes (``"1001"``, ``1001.0``).

    Raises:
        SchemaMismatchError: a value that does not fit, naming column, row and the fix.
    """
    if vt not in _SCALARS and vt not in _LISTS:
        if not nullable and any(v is None for v in values):
            row = next(i for i, v in enumerate(values) if v is None)
            raise SchemaMismatchError(
                f"column {name!r} of feature view {view!r} is null at row {row}; join keys "
                "and event timestamps must be set on every row",
                column=name,
                row=row,
            )
        return _feast_column(name, values, vt, view=view)
    inner = _LISTS.get(vt)
    check: Callable[[Any], Any]
    if inner is not None:

        def check(v: Any) -> Any:
            if not isinstance(v, list):
                raise _Bad(f"a list of {inner.name}")
            if any(x is None for x in v):
                # Feast's list values are protobuf repeated fields, which hold no nulls;
                # stored, a null would come back as 0 / "" / false.
                raise _Bad(f"a list of {inner.name} without nulls (lists cannot hold null)")
            return [_check_scalar(inner, x) for x in v]

        arrow_type = pa.list_(_SCALARS[inner])
    elif join_key and vt in _INT_RANGE:

        def check(v: Any) -> Any:
            return _key_scalar(vt, v)

        arrow_type = _SCALARS[vt]
    else:

        def check(v: Any) -> Any:
            return _check_scalar(vt, v)

        arrow_type = _SCALARS.get(vt, pa.null())
    out: list[Any] = []
    for row, v in enumerate(values):
        if v is None:
            if not nullable:
                raise SchemaMismatchError(
                    f"column {name!r} of feature view {view!r} is null at row {row}; join keys "
                    "and event timestamps must be set on every row",
                    column=name,
                    row=row,
                )
            out.append(None)
            continue
        try:
            out.append(check(v))
        except _Bad as exc:
            fix = exc.fix or "fix the value or the view schema"
            raise SchemaMismatchError(
                f"column {name!r} of feature view {view!r} expects {exc} ({vt.name}), got "
                f"{show(v)} at row {row}; {fix}",
                column=name,
                row=row,
                expected=vt.name,
            ) from None
    return pa.array(out, type=arrow_type)


def _seconds(skew: timedelta | None) -> str:
    return f"{skew.total_seconds():g}" if skew is not None else "0"


def timestamp_column(
    name: str,
    values: Sequence[Any],
    *,
    view: str,
    nullable: bool,
    latest: datetime | None = None,
    skew: timedelta | None = None,
) -> pa.Array:
    out: list[datetime | None] = []
    kinds: set[bool] = set()
    for row, v in enumerate(values):
        if v is None:
            if not nullable:
                raise InvalidTimestampError(
                    f"column {name!r} of feature view {view!r} is null at row {row}; every row "
                    "needs an event timestamp",
                    column=name,
                    row=row,
                )
            out.append(None)
            continue
        try:
            ts, naive = _timestamp(v)
        except _Bad as exc:
            raise InvalidTimestampError(
                f"column {name!r} row {row}: expected {exc}, got {show(v)}", column=name, row=row
            ) from None
        if latest is not None and ts > latest:
            raise InvalidTimestampError(
                f"column {name!r} of feature view {view!r} is {ts.isoformat()} at row {row}, "
                f"more than {_seconds(skew)} s ahead of the server clock (limit "
                f"{latest.isoformat()}, FEATURESTORE_MAX_FUTURE_SKEW_SECONDS); a future "
                "event time would pin the value until then: send the time it happened",
                column=name,
                row=row,
                limit=latest.isoformat(),
            )
        if isinstance(v, str):
            kinds.add(naive)
        out.append(ts)
    if len(kinds) > 1:
        raise InvalidTimestampError(
            f"column {name!r} mixes timestamps with and without a UTC offset; naive times "
            "are read as UTC, so give every value an offset (e.g. ...Z) or none",
            column=name,
        )
    return pa.array(out, type=_TS)


def check_shape(df: Mapping[str, Sequence[Any]], *, max_rows: int) -> int:
    """Same length for every column, at least one row, at most ``max_rows``.

    Raises:
        SchemaMismatchError: ragged or empty ``df``.
        RequestTooLargeError: too many rows.
    """
    lengths = {name: len(values) for name, values in df.items()}
    if not lengths or len(set(lengths.values())) != 1:
        raise SchemaMismatchError(
            f"df must be a non-empty object of equally long columns, got lengths {lengths}",
            lengths=lengths,
        )
    n = next(iter(lengths.values()))
    if n == 0:
        raise SchemaMismatchError("df has no rows; send at least one row")
    if n > max_rows:
        raise RequestTooLargeError(
            f"{n} rows in one write; the limit is {max_rows} (FEATURESTORE_MAX_PUSH_ROWS); "
            "split it",
            limit=max_rows,
        )
    return n
