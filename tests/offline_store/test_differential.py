"""Differential test against stock Feast's file (dask) offline store on the same repo and data.

Where Feast is right (rows it returns), values must be equal. Feast drops entity rows without an
in-TTL match in some view; those rows must be in our result with that view's features null.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.offline_store.repo_helpers import (
    CUSTOMER_SCHEMA,
    DRIVER_SCHEMA,
    PAIR_SCHEMA,
    make_store,
    three_views,
    write_rows,
)

BASE = datetime(2024, 3, 1, tzinfo=UTC)
VIEW_FEATURES = {
    "driver_fv": ["rate", "trips"],
    "customer_fv": ["balance", "tier"],
    "pair_fv": ["together"],
}


def _generate(root: Path, seed: int) -> pd.DataFrame:
    """Feature rows with unique (key, event_ts) so Feast's unordered tie-break cannot differ."""
    rng = random.Random(seed)
    data = root / "data"

    def stamps(n: int) -> list[datetime]:
        return [BASE + timedelta(minutes=m) for m in rng.sample(range(0, 3 * 24 * 60), n)]

    drv = [
        {
            "driver_id": d,
            "event_timestamp": ts,
            "created": ts + timedelta(seconds=5),
            "rate": rng.choice([None, round(rng.random(), 3)]),
            "trips": rng.randint(0, 50),
        }
        for d in range(30)
        for ts in stamps(12)
    ]
    cus = [
        {
            "customer_id": f"c{c:03d}",
            "ts": ts,
            "created": ts,
            "bal": round(rng.uniform(-10, 100), 2),
            "tier": rng.choice(["gold", "blue", None]),
        }
        for c in range(20)
        for ts in stamps(5)
    ]
    pair = [
        {
            "driver_id": rng.randrange(30),
            "customer_id": f"c{rng.randrange(20):03d}",
            "event_timestamp": ts,
            "created": ts,
            "together": rng.randint(1, 9),
        }
        for ts in stamps(400)
    ]
    write_rows(data / "driver.parquet", DRIVER_SCHEMA, drv)
    write_rows(data / "customer.parquet", CUSTOMER_SCHEMA, cus)
    write_rows(data / "pair.parquet", PAIR_SCHEMA, pair)
    n = 400
    return pd.DataFrame(
        {
            "driver_id": [rng.randrange(32) for _ in range(n)],
            "customer_id": [f"c{rng.randrange(22):03d}" for _ in range(n)],
            "event_timestamp": [
                BASE + timedelta(minutes=rng.randrange(-60, 3 * 24 * 60 + 600)) for _ in range(n)
            ],
            "row": list(range(n)),
        }
    )


def _same(a: Any, b: Any) -> bool:
    a = None if a is None or (isinstance(a, float) and math.isnan(a)) or a is pd.NA else a
    b = None if b is None or (isinstance(b, float) and math.isnan(b)) or b is pd.NA else b
    if isinstance(a, float) or isinstance(b, float):
        return (a is not None and b is not None and float(a) == float(b)) or a is b is None
    return bool(a == b)


@pytest.mark.parametrize("views", [["driver_fv"], ["driver_fv", "customer_fv", "pair_fv"]])
def test_matches_stock_feast_where_it_returns_rows_and_keeps_the_rest_null(
    tmp_path: Path, views: list[str]
) -> None:
    ours = make_store(tmp_path / "ours", three_views(timedelta(hours=6), timedelta(days=1)))
    stock = make_store(
        tmp_path / "stock", three_views(timedelta(hours=6), timedelta(days=1)), offline_store="file"
    )
    entity_df = _generate(tmp_path / "ours", seed=7)
    _generate(tmp_path / "stock", seed=7)
    refs = [f"{v}:{f}" for v in views for f in VIEW_FEATURES[v]]

    our_df = ours.get_historical_features(entity_df=entity_df, features=refs).to_df()
    stock_df = stock.get_historical_features(entity_df=entity_df, features=refs).to_df()

    assert len(our_df) == len(entity_df)
    assert our_df["row"].tolist() == entity_df["row"].tolist()
    by_row = our_df.set_index("row")
    features = [f for v in views for f in VIEW_FEATURES[v]]
    for record in stock_df.to_dict("records"):
        mine = by_row.loc[record["row"]]
        for feature in features:
            assert _same(mine[feature], record[feature]), (record["row"], feature)

    dropped = set(entity_df["row"]) - set(stock_df["row"])
    # The data is built so that Feast drops rows; otherwise this test would prove nothing.
    assert dropped
    for row in dropped:
        mine = by_row.loc[row]
        assert any(all(_same(mine[f], None) for f in VIEW_FEATURES[v]) for v in views), row
