"""A deliberately naive point-in-time join: loops over plain dicts, no pandas, no SQL.

It is the oracle the DuckDB query is compared against, written straight from DESIGN.md:
for each entity row and view, among the view's rows with equal keys and
``t - ttl <= event_ts <= t`` (ttl 0 = unlimited) take the greatest (event_ts, created_ts);
exact ties go to the row later in the source; no candidate -> None.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class RefView:
    """One view as the reference sees it (names already mapped)."""

    join_keys: tuple[str, ...]
    ttl: timedelta
    timestamp_field: str
    created_field: str | None
    features: dict[str, str]  # source column -> output column
    rows: list[dict[str, Any]]  # in source order


def _sort_key(row: dict[str, Any], view: RefView, position: int) -> tuple[Any, ...]:
    created = row.get(view.created_field) if view.created_field else None
    # A missing created time ranks below any real one.
    return (row[view.timestamp_field], created is not None, created or datetime.min, position)


def reference_pit(
    entity_rows: list[dict[str, Any]], views: list[RefView], timestamp_column: str
) -> list[dict[str, Any]]:
    """Entity rows (in order, duplicates kept) each followed by every view's features."""
    out = []
    for entity in entity_rows:
        result = dict(entity)
        t = entity[timestamp_column]
        for view in views:
            best = None
            best_key = None
            for position, row in enumerate(view.rows):
                ts = row[view.timestamp_field]
                if ts is None:
                    continue
                if any(
                    row[k] is None or entity[k] is None or row[k] != entity[k]
                    for k in view.join_keys
                ):
                    continue
                if ts > t:
                    continue
                if view.ttl > timedelta(0) and ts < t - view.ttl:
                    continue
                key = _sort_key(row, view, position)
                if best_key is None or key > best_key:
                    best, best_key = row, key
            for column, output in view.features.items():
                result[output] = None if best is None else best[column]
        out.append(result)
    return out
