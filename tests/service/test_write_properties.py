"""Property: a pushed value reads back unchanged or the push is refused whole.

Every feature type of ``customer_profile`` gets values from wide strategies (out-of-range
numbers, NaN and infinities, nulls inside lists, any text). The oracle says which values
the declared type holds exactly; a float for a Float32 feature reads back as its nearest
float32, the precision the type declares.
"""

from __future__ import annotations

import itertools
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.service.conftest import AppClient, columns

FLOAT32_MAX = float(np.finfo(np.float32).max)
FEATURES = [
    "current_balance",
    "lifetime_trip_count",
    "avg_passenger_rating",
    "membership_tier",
    "signup_ts",
    "favourite_zones",
]
_ids = itertools.count()

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
ints = st.one_of(st.none(), st.integers(-(2**70), 2**70), st.just(2**63), st.just(-(2**63)))
epochs = st.one_of(st.none(), st.integers(-62_135_596_800, 253_402_300_799))
lists = st.one_of(st.none(), st.lists(st.one_of(text, st.none()), max_size=4))


def _accepts(row: dict[str, Any]) -> bool:
    """Whether every value fits its declared type exactly (the oracle)."""
    balance, rating = row["current_balance"], row["avg_passenger_rating"]
    trips, zones = row["lifetime_trip_count"], row["favourite_zones"]
    return (
        (balance is None or math.isfinite(balance))
        and (rating is None or (math.isfinite(rating) and abs(rating) <= FLOAT32_MAX))
        and (trips is None or -(2**63) <= trips < 2**63)
        and (zones is None or None not in zones)
    )


def _expected(name: str, value: Any) -> Any:
    if name == "avg_passenger_rating" and value is not None:
        return float(np.float32(value))
    return value


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    current_balance=floats,
    lifetime_trip_count=ints,
    avg_passenger_rating=floats,
    membership_tier=st.one_of(st.none(), text),
    signup_ts=epochs,
    favourite_zones=lists,
)
def test_pushed_values_read_back_unchanged_or_are_refused(client: AppClient, **row: Any) -> None:
    customer = f"c_prop_{next(_ids)}"
    when = datetime.now(UTC) - timedelta(seconds=1)
    df = {"customer_id": [customer], "event_timestamp": [when.isoformat()]}
    df.update({name: [value] for name, value in row.items()})
    # json.dumps writes NaN/Infinity tokens, which a JSON client may well send
    body = json.dumps({"feature_view_name": "customer_profile", "df": df})
    resp = client.post(
        "/write-to-online-store", content=body, headers={"content-type": "application/json"}
    )
    lookup = {
        "entities": {"customer_id": [customer]},
        "features": [f"customer_profile:{f}" for f in FEATURES],
    }
    cols = columns(client.post("/get-online-features", json=lookup).json())
    if not _accepts(row):
        assert resp.status_code == 422, resp.text
        assert cols["membership_tier"]["statuses"] == ["NOT_FOUND"]  # nothing written
        return
    assert resp.status_code == 200, resp.text
    for name in FEATURES:
        value = row[name]
        if value is None:
            assert cols[name]["statuses"] == ["NULL_VALUE"], name
        else:
            assert cols[name]["values"] == [_expected(name, value)], name
            assert cols[name]["statuses"] == ["PRESENT"], name
