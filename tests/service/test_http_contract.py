"""The lookup request contract: one table of requests to ``feast serve`` and ``featurestore serve``.

Each row says what stock ``feast serve`` answers and what we answer (docs/http-api.md
has the same table). Where stock answers 200 with the right values, we answer 200 with
the same values as for the canonical request; where stock guesses (truncates 1001.5 to
1001, reads ``true`` as 1, picks one of two spellings of a key) or fails with a 500, we
answer 422 naming the value.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.service.conftest import Repo, ServeProcess, columns
from tests.service.differential_helpers import MISSING_DRIVER, compare

DRIVER_FEATURES = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:avg_daily_trips",
    "driver_hourly_stats:is_active",
]


@pytest.fixture(scope="module")
def ours(repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    server = ServeProcess(repo, tmp_path_factory.mktemp("contract") / "serve.log")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield client
    finally:
        server.stop()


@pytest.fixture(scope="module")
def drivers(repo: Repo) -> list[int]:
    return sorted({k[0] for k in repo.latest("driver_stats", ["driver_id"])})[:8]


@pytest.fixture(scope="module")
def pairs(repo: Repo) -> list[tuple[int, str]]:
    return sorted(repo.latest("driver_customer_stats", ["driver_id", "customer_id"]))[:6]


def _post(client: httpx.Client, body: Any) -> httpx.Response:
    # A fresh connection each time: after a 500, `feast serve` may drop a kept-alive one.
    headers = {"connection": "close"}
    if isinstance(body, bytes):
        headers["content-type"] = "application/json"
        return client.post("/get-online-features", content=body, headers=headers)
    return client.post("/get-online-features", json=body, headers=headers)


def _same_answer(
    ours: httpx.Client, feast: httpx.Client, body: dict[str, Any], canonical: dict[str, Any]
) -> None:
    """Both 200; ours equals our answer to the canonical body and agrees with stock."""
    mine, theirs = _post(ours, body), _post(feast, body)
    assert theirs.status_code == 200, theirs.text
    assert mine.status_code == 200, mine.text
    reference = _post(ours, canonical)
    assert reference.status_code == 200, reference.text
    assert columns(mine.json()) == columns(reference.json())
    assert {"PRESENT", "NOT_FOUND"} <= compare(mine.json(), theirs.json())


def test_int64_key_as_decimal_string_is_answered_like_feast_serve(
    ours: httpx.Client, feast_serve: httpx.Client, drivers: list[int]
) -> None:
    ids = [*drivers, MISSING_DRIVER]
    canonical = {"entities": {"driver_id": ids}, "features": DRIVER_FEATURES}
    body = {"entities": {"driver_id": [str(d) for d in ids]}, "features": DRIVER_FEATURES}
    _same_answer(ours, feast_serve, body, canonical)
    # The echoed join key column is the integer, as in Feast.
    echoed = columns(_post(ours, body).json())["driver_id"]["values"]
    assert echoed == ids


def test_int64_key_as_integral_float_is_answered_like_feast_serve(
    ours: httpx.Client, feast_serve: httpx.Client, drivers: list[int]
) -> None:
    ids = [*drivers, MISSING_DRIVER]
    canonical = {"entities": {"driver_id": ids}, "features": DRIVER_FEATURES}
    body = {"entities": {"driver_id": [float(d) for d in ids]}, "features": DRIVER_FEATURES}
    _same_answer(ours, feast_serve, body, canonical)


def test_entity_name_in_place_of_join_key_is_answered_like_feast_serve(
    ours: httpx.Client, feast_serve: httpx.Client, drivers: list[int]
) -> None:
    ids = [*drivers, MISSING_DRIVER]
    canonical = {"entities": {"driver_id": ids}, "features": DRIVER_FEATURES}
    body = {"entities": {"driver": ids}, "features": DRIVER_FEATURES}
    _same_answer(ours, feast_serve, body, canonical)


def test_two_key_view_with_string_driver_ids_is_answered_like_feast_serve(
    ours: httpx.Client, feast_serve: httpx.Client, pairs: list[tuple[int, str]]
) -> None:
    features = ["driver_customer_stats:trips_together", "driver_customer_stats:avg_tip"]
    canonical = {
        "entities": {"driver_id": [d for d, _ in pairs], "customer_id": [c for _, c in pairs]},
        "features": features,
    }
    body = {
        "entities": {
            "driver_id": [str(d) for d, _ in pairs] + [str(MISSING_DRIVER)],
            "customer_id": [c for _, c in pairs] + ["c_missing"],
        },
        "features": features,
    }
    canonical["entities"]["driver_id"].append(MISSING_DRIVER)
    canonical["entities"]["customer_id"].append("c_missing")
    _same_answer(ours, feast_serve, body, canonical)


def test_feature_service_wins_over_features_like_feast_serve(
    ours: httpx.Client, feast_serve: httpx.Client, pairs: list[tuple[int, str]]
) -> None:
    entities = {
        "driver_id": [d for d, _ in pairs],
        "customer_id": [c for _, c in pairs],
        "distance_km": [3.0] * len(pairs),
        "duration_min": [11.0] * len(pairs),
    }
    service_only = {"entities": entities, "feature_service": "ride_ranking_v1"}
    both = {**service_only, "features": ["customer_profile:signup_ts"]}
    for client in (ours, feast_serve):
        with_features, alone = _post(client, both), _post(client, service_only)
        assert with_features.status_code == alone.status_code == 200, with_features.text
        assert columns(with_features.json()) == columns(alone.json())
    names = _post(ours, both).json()["metadata"]["feature_names"]
    assert set(names) == set(_post(feast_serve, both).json()["metadata"]["feature_names"])
    assert "signup_ts" not in names


F = ["driver_hourly_stats:conv_rate"]

# (case, body, stock feast serve's status, our status, our error type, words in our message)
REFUSED: list[tuple[str, Any, int, int, str, list[str]]] = [
    (
        "fractional float: Feast truncates to another driver",
        {"entities": {"driver_id": [1001.5]}, "features": F},
        200,
        422,
        "invalid_entity",
        ["1001.5", "exact integer"],
    ),
    (
        "float beyond 2**53",
        {"entities": {"driver_id": [2.0**60]}, "features": F},
        200,
        422,
        "invalid_entity",
        ["2**53"],
    ),
    (
        "bool for an integer key: Feast reads true as 1",
        {"entities": {"driver_id": [True]}, "features": F},
        200,
        422,
        "invalid_entity",
        ["driver_id", "integer"],
    ),
    (
        "string with separators",
        {"entities": {"driver_id": ["1_001"]}, "features": F},
        200,
        422,
        "invalid_entity",
        ["'1_001'", "decimal string"],
    ),
    (
        "string with spaces",
        {"entities": {"driver_id": [" 1001"]}, "features": F},
        200,
        422,
        "invalid_entity",
        ["decimal string"],
    ),
    (
        "string with leading zeros",
        {"entities": {"driver_id": ["01001"]}, "features": F},
        200,
        422,
        "invalid_entity",
        ["leading"],
    ),
    (
        "non-numeric string",
        {"entities": {"driver_id": ["abc"]}, "features": F},
        500,
        422,
        "invalid_entity",
        ["'abc'"],
    ),
    (
        "decimal string beyond int64",
        {"entities": {"driver_id": ["9223372036854775808"]}, "features": F},
        500,
        422,
        "invalid_entity",
        ["out of range"],
    ),
    (
        "number for a string key: Feast stringifies it",
        {"entities": {"customer_id": [7]}, "features": ["customer_profile:membership_tier"]},
        200,
        422,
        "invalid_entity",
        ["customer_id", "string"],
    ),
    (
        "entity by name and by join key: Feast keeps one",
        {"entities": {"driver": [1001], "driver_id": [1002]}, "features": F},
        200,
        422,
        "invalid_entity",
        ["once"],
    ),
    (
        "missing join key",
        {"entities": {"customer_id": ["c_1"]}, "features": F},
        500,
        422,
        "invalid_entity",
        ["driver_id", "missing"],
    ),
    (
        "unknown feature view",
        {"entities": {"driver_id": [1001]}, "features": ["nope:x"]},
        404,
        404,
        "feature_view_not_found",
        ["'nope'"],
    ),
    (
        "unknown feature service",
        {"entities": {"driver_id": [1001]}, "feature_service": "nope"},
        404,
        404,
        "feature_service_not_found",
        ["'nope'"],
    ),
    (
        "no features",
        {"entities": {"driver_id": [1001]}},
        500,
        422,
        "invalid_request",
        ["no features"],
    ),
    ("malformed JSON", b'{"entities": {"driver_id": [1001]', 422, 422, "validation_error", []),
    (
        "entities not an object",
        {"entities": [1001], "features": F},
        422,
        422,
        "validation_error",
        ["entities"],
    ),
]


@pytest.mark.parametrize(
    ("case", "body", "stock_status", "status", "error_type", "words"),
    REFUSED,
    ids=[row[0] for row in REFUSED],
)
def test_inputs_feast_serve_guesses_at_are_refused_with_a_clear_422(
    ours: httpx.Client,
    feast_serve: httpx.Client,
    case: str,
    body: Any,
    stock_status: int,
    status: int,
    error_type: str,
    words: list[str],
) -> None:
    assert _post(feast_serve, body).status_code == stock_status, case
    resp = _post(ours, body)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["type"] == error_type
    for word in words:
        assert word in error["message"], (word, error["message"])


def test_entity_name_with_string_ids_is_read_right_where_feast_serve_misses(
    ours: httpx.Client, feast_serve: httpx.Client, drivers: list[int]
) -> None:
    canonical = {"entities": {"driver_id": drivers}, "features": DRIVER_FEATURES}
    body = {"entities": {"driver": [str(d) for d in drivers]}, "features": DRIVER_FEATURES}
    # Feast types values under an entity name by inference: "1001" is a string key, no row.
    theirs = columns(_post(feast_serve, body).json())
    assert theirs["conv_rate"]["values"] == [None] * len(drivers)
    mine, reference = _post(ours, body), _post(ours, canonical)
    assert mine.status_code == 200, mine.text
    assert columns(mine.json()) == columns(reference.json())
    assert None not in columns(mine.json())["conv_rate"]["values"]


def test_empty_feature_service_falls_back_to_features_like_feast_serve(
    ours: httpx.Client, feast_serve: httpx.Client, drivers: list[int]
) -> None:
    canonical = {"entities": {"driver_id": [*drivers, MISSING_DRIVER]}, "features": DRIVER_FEATURES}
    body = {**canonical, "feature_service": ""}
    _same_answer(ours, feast_serve, body, canonical)
