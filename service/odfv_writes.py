"""``POST /write-to-online-store`` for an on-demand view stored online, through Feast.

An on-demand view with ``write_to_online_store=True`` keeps its outputs in Redis under its
entities; ``feast serve`` and our lookups read them back (:mod:`service.catalog`). Writing
one takes the view's *inputs* (its entities' join keys, its source views' features, its
request sources' fields), runs its transformation and stores the outputs: exactly what
Feast's ``FeatureStore.write_to_online_store`` does, so that is the path taken (the
transformation, Feast's conversion of its outputs, then our online store's
``online_write_batch``, which never stores a row over a newer one).

Every input is checked first, with the validators ``/push`` uses
(:func:`service.write_values.column`), so bad cells are a 422 naming the column before the
transformation runs. A transformation that raises, or outputs Feast cannot convert to the
view's schema, is a 422 naming the view: both happen before anything is written. Feast
stamps every stored row with the time of the write (not an event time from the request).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import redis
from feast import FeatureStore, OnDemandFeatureView
from feast.errors import FeatureViewNotFoundException
from feast.value_type import ValueType

from foundation.errors import (
    BackendUnavailableError,
    FeatureViewNotFoundError,
    InvalidRequestError,
    SchemaMismatchError,
)
from online_store.writer import REDIS_OUTAGE
from service.write_values import column

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OdfvInput:
    """One column the transformation takes.

    Attributes:
        name: the column.
        value_type: its declared Feast type.
        join_key: an entity join key (never null; integer keys take lookup forms).
        origin: where it is declared, for messages.
    """

    name: str
    value_type: ValueType
    join_key: bool
    origin: str


@dataclass(frozen=True, slots=True)
class OdfvWrite:
    """What a write stored: the request's rows and its distinct entity keys."""

    rows: int
    entities: int


def refuse_unstored(view: OnDemandFeatureView) -> None:
    """Refuse a write to an on-demand view whose outputs are not kept online.

    Raises:
        InvalidRequestError: always when ``view.write_to_online_store`` is false.
    """
    if not view.write_to_online_store:
        raise InvalidRequestError(
            f"{view.name!r} is an on-demand feature view without write_to_online_store=True: "
            "its values are computed at lookup from its source views and the request "
            "data, so there is nothing to store; write its source views instead (or "
            "declare it with write_to_online_store=True and run `feast apply`)",
            feature_view=view.name,
        )


def odfv_inputs(view: OnDemandFeatureView) -> list[OdfvInput]:
    """The columns the view's transformation takes, in order: join keys, source view
    features, request fields (a name declared twice is taken once, first declaration)."""
    found: dict[str, OdfvInput] = {}
    for entity in view.entity_columns:
        found.setdefault(
            entity.name,
            OdfvInput(entity.name, entity.dtype.to_value_type(), True, "its entities"),
        )
    for projection in view.source_feature_view_projections.values():
        for feature in projection.features:
            found.setdefault(
                feature.name,
                OdfvInput(
                    feature.name,
                    feature.dtype.to_value_type(),
                    False,
                    f"source feature view {projection.name!r}",
                ),
            )
    for name, value_type in view.get_request_data_schema().items():
        found.setdefault(name, OdfvInput(name, value_type, False, "its request source"))
    return list(found.values())


def build_inputs(view: OnDemandFeatureView, df: Mapping[str, Sequence[Any]]) -> pa.Table:
    """The typed Arrow table of the transformation's inputs, or a 422 naming the column.

    Args:
        view: the on-demand view (``write_to_online_store=True``).
        df: column name -> values (Feast's ``df`` JSON; :func:`check_shape` already ran).

    Returns:
        One column per input, typed as declared.

    Raises:
        SchemaMismatchError: a missing or unknown column, or a value that does not fit.
    """
    inputs = odfv_inputs(view)
    names = [i.name for i in inputs]
    missing = [n for n in names if n not in df]
    if missing:
        wanted = {i.name: f"{i.value_type.name} from {i.origin}" for i in inputs}
        raise SchemaMismatchError(
            f"on-demand feature view {view.name!r} needs columns {missing} in df to run its "
            f"transformation; it takes {wanted}",
            feature_view=view.name,
            missing=missing,
        )
    unknown = sorted(set(df) - set(names))
    if unknown:
        raise SchemaMismatchError(
            f"df has columns {unknown} that on-demand feature view {view.name!r} does not "
            f"take (its inputs are {names}; its outputs are computed and the stored event "
            "time is the time of the write); remove or rename them",
            feature_view=view.name,
            unknown=unknown,
        )
    arrays = {
        i.name: column(
            i.name,
            df[i.name],
            i.value_type,
            view=view.name,
            nullable=not i.join_key,
            join_key=i.join_key,
        )
        for i in inputs
    }
    return pa.table(arrays)


def _entities(view: OnDemandFeatureView, table: pa.Table) -> int:
    keys = [e.name for e in view.entity_columns if e.name in table.column_names]
    if not keys:
        return min(int(table.num_rows), 1)
    return int(table.select(keys).group_by(keys).aggregate([]).num_rows)


def _from_redis(exc: BaseException) -> bool:
    """Whether a Redis-outage-like error was raised by the Redis client or our store
    (an ``OSError`` from the user's transformation is the transformation's fault)."""
    if isinstance(exc, redis.RedisError):
        return True
    modules = (
        str(frame.f_globals.get("__name__", ""))
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )
    return any(m.startswith(("redis.", "online_store.")) for m in modules)


def write_odfv(
    store: FeatureStore, view: OnDemandFeatureView, df: Mapping[str, Sequence[Any]]
) -> OdfvWrite:
    """Validate the inputs, then run Feast's ``write_to_online_store`` (blocking: run in a
    worker thread).

    Args:
        store: Feast's store with our plugins (the online write goes through our
            online store's ``online_write_batch``).
        view: the on-demand view (from the registry snapshot).
        df: the request's columns.

    Returns:
        The request's rows and its distinct entity keys (Feast stores the last row per
        key, stamped with the time of the write).

    Raises:
        InvalidRequestError: the view is not stored online.
        SchemaMismatchError: bad input (nothing ran, nothing written).
        InvalidRequestError: the transformation raised, or its outputs do not convert to
            the view's schema (nothing written).
        FeatureViewNotFoundError: Feast's registry cache does not hold the view yet.
        BackendUnavailableError: Redis could not take the write (retrying is safe).
    """
    refuse_unstored(view)
    table = build_inputs(view, df)
    frame = table.to_pandas()
    name = view.name
    try:
        store.write_to_online_store(name, df=frame)
    except BackendUnavailableError:
        raise
    except FeatureViewNotFoundException:
        raise FeatureViewNotFoundError(
            f"on-demand feature view {name!r} is not in the registry the store reads yet; "
            "retry once the registry cache refreshes, or run `feast apply`",
            feature_view=name,
        ) from None
    except MemoryError:
        raise
    except REDIS_OUTAGE as exc:
        if not _from_redis(exc):
            raise _refusal(name, exc) from exc
        log.warning("Redis write of on-demand view %r failed: %s", name, type(exc).__name__)
        raise BackendUnavailableError(
            f"the Redis online store could not take the write of on-demand feature view "
            f"{name!r} ({type(exc).__name__}); retry the same write once Redis accepts "
            "writes again",
            backend="redis",
            feature_view=name,
        ) from exc
    except Exception as exc:
        raise _refusal(name, exc) from exc
    return OdfvWrite(rows=table.num_rows, entities=_entities(view, table))


def _refusal(name: str, exc: BaseException) -> InvalidRequestError:
    """The 422 for an exception from the transformation or Feast's conversion of its
    outputs (worded as :func:`service.odfv._refusal` words it for lookups)."""
    log.warning("on-demand view %r failed on a write", name, exc_info=exc)
    return InvalidRequestError(
        f"on-demand feature view {name!r} raised {type(exc).__name__} on this write: {exc}; "
        "nothing was written: the view's transformation needs fixing (then `feast apply`) "
        "if the inputs are right, else fix the inputs",
        feature_view=name,
    )
