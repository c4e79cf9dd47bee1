"""Input checks run before a point-in-time query, so mistakes become clear 4xx errors.

DuckDB would otherwise fail deep inside the join (or, worse, cast a string key to a number
silently); here each problem is named with the view, the column and the fix.
"""

from __future__ import annotations

import duckdb
from feast.on_demand_feature_view import OnDemandFeatureView

from foundation.errors import InvalidEntityError, InvalidRequestError
from offline_store.pit_join import ViewSpec
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
    for view in views:
        source_types = describe(con, view.scan_sql)
        needed = [m for _, m in view.join_keys] + [f.source_column for f in view.features]
        needed.append(view.timestamp_field)
        missing = [c for c in needed if _raw_column(view, c) not in source_types]
        if missing:
            raise InvalidRequestError(
                f"the source of feature view {view.name!r} has no column(s) {missing} (it has "
                f"{sorted(source_types)}); fix the schema or the source's field_mapping and "
                "run `feast apply`",
                feature_view=view.name,
                missing=missing,
            )
        for entity_col, mapped in view.join_keys:
            if entity_col not in entity_types:
                raise InvalidEntityError(
                    f"entity rows lack join key {entity_col!r} needed by feature view "
                    f"{view.name!r}; add a {entity_col!r} column",
                    join_key=entity_col,
                    feature_view=view.name,
                )
            ours = _family(entity_types[entity_col])
            theirs = _family(source_types[_raw_column(view, mapped)])
            if ours != theirs and "string" in (ours, theirs):
                raise InvalidEntityError(
                    f"join key {entity_col!r} is {entity_types[entity_col]} in the entity rows "
                    f"but {source_types[_raw_column(view, mapped)]} in the source of feature "
                    f"view {view.name!r}; convert the entity column",
                    join_key=entity_col,
                    feature_view=view.name,
                )
        for feature in view.features:
            if feature.output_name in entity_types:
                raise InvalidRequestError(
                    f"feature {feature.output_name!r} of view {view.name!r} has the same name "
                    "as an entity column; rename the column or use full_feature_names=True",
                    column=feature.output_name,
                )


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
