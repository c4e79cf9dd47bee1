"""One worker's records per on-demand transformation (a view's name, mode and UDF source).

Kept by code, not by the plan's objects: a registry refresh rebuilds every view, and a view
whose code is unchanged keeps its record (:mod:`service.udf_runner`'s pace,
:mod:`service.udf_batches`' shared calls); new code starts again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from service.odfv import OdfvStep

# Records kept per worker; past this many (code changed that often) they start again.
MAX_RECORDS = 4096


def code_identity(step: OdfvStep) -> tuple[str, str, str]:
    """A view's transformation: name, mode and UDF source (not the plan's objects)."""
    transformation = step.view.feature_transformation
    return step.view.name, str(step.view.mode), str(getattr(transformation, "udf_string", ""))


_R = TypeVar("_R")


class CodeRecords(Generic[_R]):
    """One worker's records per transformation (:func:`code_identity`): they outlive
    registry refreshes that leave a view's code as it was, and start again when it changes.
    Past :data:`MAX_RECORDS` (code changed that often) they start again, all but those
    ``keep`` holds on to."""

    def __init__(self, make: Callable[[], _R], keep: Callable[[_R], bool] | None = None) -> None:
        self._make = make
        self._keep = keep
        self._records: dict[tuple[str, str, str], _R] = {}

    def get(self, step: OdfvStep) -> _R:
        """``step``'s record, new if its code was never seen here."""
        identity = code_identity(step)
        record = self._records.get(identity)
        if record is None:
            if len(self._records) >= MAX_RECORDS:
                keep = self._keep
                self._records = {k: r for k, r in self._records.items() if keep and keep(r)}
            record = self._records[identity] = self._make()
        return record

    def peek(self, step: OdfvStep) -> _R | None:
        """``step``'s record if it has one."""
        return self._records.get(code_identity(step))
