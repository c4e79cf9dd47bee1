"""Input checks run before a point-in-time query, so mistakes become clear 4xx errors.

DuckDB would otherwise fail deep inside the join (or, worse, cast a string key to a number
silently); here each problem is named with the view, the column and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

import duckdb
from feast.feature_view import FeatureView
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.utils import _get_requested_feature_views_to_features_dict

from foundation.errors import FeatureViewNotFoundError, InvalidEntityError, InvalidRequestError
from offline_store.pit_join import FeatureSpec, ViewSpec
from offline_store.sources import describe

_INTEGER = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
)
_FLOAT = ("FLOAT", "DOUBLE", "DECIMAL", "REAL")
_STRING = ("VARCHAR", "STRING", "TEXT")
V = TypeVar("V", bound="ColumnedView")


# Every name the joins add to the entity rows or use inside their queries starts with this
# (``__row_id``, ``__entity_ts``, ``__probe0``, ``__o_ts``...): an entity column named so would
# be overwritten or would shadow the join's own. pandas' index columns are not in the way.
RESERVED_PREFIX = "__"
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")


def fold_case(name: str) -> str:
    """A column name as DuckDB and Spark compare names: ASCII letters without case."""
    return "".join(c.lower() if c.isascii() else c for c in name)


def check_entity_columns(names: Sequence[str]) -> None:
    """Refuse entity column names the join would overwrite or could not keep apart.

    Raises:
        InvalidEntityError: a name starts with :data:`RESERVED_PREFIX`, or two names differ
            only in the case of ASCII letters (both engines compare names without case: one
            column would be renamed or read for the other).
    """
    reserved = [
        n for n in names if n.startswith(RESERVED_PREFIX) and not _PANDAS_INDEX.fullmatch(n)
    ]
    if reserved:
        raise InvalidEntityError(
            f"entity column(s) {reserved} start with {RESERVED_PREFIX!r}, which the "
            "point-in-time join keeps for its own columns; rename them",
            columns=reserved,
        )
    seen: dict[str, str] = {}
    for name in names:
        first = seen.setdefault(fold_case(name), name)
        if first != name:
            raise InvalidEntityError(
                f"entity columns {first!r} and {name!r} differ only in case, and the join "
                "compares column names without case; rename one of them",
                columns=[first, name],
            )


def _family(duck_type: str) -> str:
    base = duck_type.upper().split("(")[0].strip()
    if base in _INTEGER:
        return "integer"
    if base in _FLOAT:
        return "number"
    if base in _STRING:
        return "string"
    return base.lower()


def _raw_column(view: ViewSpec, mapped: str) -> str:
    for raw, target in view.column_map.items():
        if target == mapped:
            return raw
    return mapped


def check_request(
    con: duckdb.DuckDBPyConnection, views: list[ViewSpec], entity_types: dict[str, str]
) -> None:
    """Check entity columns against every view's needs and its source schema.

    Args:
        con: the connection the join will run on.
        views: the views of the request.
        entity_types: entity column -> DuckDB type.

    Raises:
        InvalidEntityError: a join key is missing from the entity rows or has an incompatible
            type (string vs number).
        InvalidRequestError: a feature name clashes with an entity column, or the source lacks
            a column the view declares.
    """
    entity = {name: (duck_type, _family(duck_type)) for name, duck_type in entity_types.items()}
    for view in views:
        source = {name: (t, _family(t)) for name, t in describe(con, view.scan_sql).items()}
        check_columns(view, source, entity, _raw_column)


def check_request_data(odfvs: list[OnDemandFeatureView], entity_columns: list[str]) -> None:
    """Check that the entity rows carry the request data of every requested on-demand view.

    Args:
        odfvs: the on-demand views of the request.
        entity_columns: the entity rows' columns.

    Raises:
        InvalidEntityError: a request field is not among the entity columns.
    """
    have = set(entity_columns)
    for odfv in odfvs:
        missing = sorted(set(odfv.get_request_data_schema()) - have)
        if missing:
            raise InvalidEntityError(
                f"on-demand feature view {odfv.name!r} needs request data {missing}, which "
                f"the entity rows do not have (they have {sorted(have)}); add the column(s) "
                "to the entity rows",
                feature_view=odfv.name,
                missing=missing,
            )


class ColumnedView(Protocol):
    """What :func:`check_columns` reads of a view (the DuckDB and the Spark view specs)."""

    @property
    def name(self) -> str: ...
    @property
    def join_keys(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def timestamp_field(self) -> str: ...
    @property
    def features(self) -> tuple[FeatureSpec, ...]: ...


def check_columns(
    view: V,
    source: Mapping[str, tuple[str, str]],
    entity: Mapping[str, tuple[str, str]],
    raw_column: Callable[[V, str], str],
) -> None:
    """One view's columns against its source schema and the entity rows' columns.

    Shared by the DuckDB and the Spark store, so both refuse the same requests with the
    same messages.

    Args:
        view: the view's spec.
        source: source column -> (its type as the engine names it, type family).
        entity: entity column -> (type, family); families are "integer", "number",
            "string" or the engine's own name.
        raw_column: the raw source column of a mapped name.

    Raises:
        InvalidEntityError: a join key is missing from the entity rows or is a string on one
            side and a number on the other.
        InvalidRequestError: the source lacks a column the view declares, or a feature
            name clashes with an entity column.
    """
    needed = [m for _, m in view.join_keys] + [f.source_column for f in view.features]
    needed.append(view.timestamp_field)
    missing = [c for c in needed if raw_column(view, c) not in source]
    if missing:
        raise InvalidRequestError(
            f"the source of feature view {view.name!r} has no column(s) {missing} (it has "
            f"{sorted(source)}); fix the schema or the source's field_mapping and "
            "run `feast apply`",
            feature_view=view.name,
            missing=missing,
        )
    for entity_col, mapped in view.join_keys:
        if entity_col not in entity:
            raise InvalidEntityError(
                f"entity rows lack join key {entity_col!r} needed by feature view "
                f"{view.name!r}; add a {entity_col!r} column",
                join_key=entity_col,
                feature_view=view.name,
            )
        ours, theirs = entity[entity_col], source[raw_column(view, mapped)]
        if ours[1] != theirs[1] and "string" in (ours[1], theirs[1]):
            raise InvalidEntityError(
                f"join key {entity_col!r} is {ours[0]} in the entity rows but {theirs[0]} in "
                f"the source of feature view {view.name!r}; convert the entity column",
                join_key=entity_col,
                feature_view=view.name,
            )
    entity_names = {fold_case(name) for name in entity}
    for feature in view.features:
        if fold_case(feature.output_name) in entity_names:
            raise InvalidRequestError(
                f"feature {feature.output_name!r} of view {view.name!r} has the same name "
                "as an entity column; rename the column or use full_feature_names=True",
                column=feature.output_name,
            )


def features_by_view(
    feature_refs: list[str], views: list[FeatureView], odfvs: list[OnDemandFeatureView]
) -> dict[FeatureView, list[str]]:
    """The features to join per view, each once, in Feast's order.

    Feast groups the refs, but a ref with a version suffix (``view@latest:f``) reaches the
    store next to its plain form (``view:f``), so Feast's list names ``f`` twice: two
    columns of one name.

    Raises:
        FeatureViewNotFoundError: a reference names no known view.
    """
    try:
        grouped, _ = _get_requested_feature_views_to_features_dict(feature_refs, views, odfvs)
    except ValueError as exc:
        raise FeatureViewNotFoundError(f"{exc}; run `feast apply` or fix the ref") from exc
    return {view: list(dict.fromkeys(features)) for view, features in grouped.items()}
