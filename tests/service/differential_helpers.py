"""Comparing our answers with feast serve's, shared by the differential HTTP tests."""

from __future__ import annotations

from typing import Any

import httpx

from tests.service.conftest import AppClient, columns

MISSING_DRIVER = 4_000_000_002


def compare(ours: dict[str, Any], theirs: dict[str, Any]) -> set[str]:
    """Assert the rules of the module docstring; return the statuses seen in ours."""
    mine, feast = columns(ours), columns(theirs)
    assert set(mine) == set(feast)
    seen: set[str] = set()
    for name, col in mine.items():
        other = feast[name]
        for j, status in enumerate(col["statuses"]):
            seen.add(status)
            if status == "NOT_FOUND":
                assert col["values"][j] is None
                assert other["values"][j] is None, (name, j)
                assert col["event_timestamps"][j] == "1970-01-01T00:00:00Z"
            elif status == "OUTSIDE_MAX_AGE":
                assert col["values"][j] is None
                assert other["statuses"][j] == "PRESENT"  # Feast ignores the TTL online
                assert col["event_timestamps"][j] == other["event_timestamps"][j]
            elif status == "NULL_VALUE":
                assert col["values"][j] is None
                assert other["values"][j] is None, (name, j)
                assert other["statuses"][j] in ("PRESENT", "NULL_VALUE")
                assert col["event_timestamps"][j] == other["event_timestamps"][j]
            else:
                assert status == other["statuses"][j], (name, j)
                assert col["values"][j] == other["values"][j], (name, j)
                assert col["event_timestamps"][j] == other["event_timestamps"][j], (name, j)
    return seen


def post_both(
    ours: AppClient, feast: httpx.Client, body: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both servers' 200 answers to one lookup, after checking them with :func:`compare`."""
    mine, theirs = (
        ours.post("/get-online-features", json=body),
        feast.post("/get-online-features", json=body),
    )
    assert mine.status_code == 200, mine.text
    assert theirs.status_code == 200, theirs.text
    compare(mine.json(), theirs.json())
    return mine.json(), theirs.json()
