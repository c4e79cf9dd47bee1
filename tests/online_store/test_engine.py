"""Engine behaviour around failures: errors surface, no interval is recorded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from online_store.engine import prefetch
from tests.online_store.feast_repo import DUCKDB, RepoSpec, make_store
from tests.online_store.views import T0, parquet_views


def test_prefetch_yields_in_order_then_raises_the_producer_error() -> None:
    def batches() -> Iterator[pa.RecordBatch]:
        for i in range(3):
            yield pa.record_batch({"x": [i]})
        raise OSError("parquet file vanished")

    seen: list[int] = []

    def consume() -> None:
        for batch in prefetch(batches()):
            seen.append(batch.column(0)[0].as_py())

    with pytest.raises(OSError, match="vanished"):
        consume()
    assert seen == [0, 1, 2]


def test_failed_pull_fails_materialize_and_records_no_interval(
    tmp_path: Path, redis_url: str
) -> None:
    missing = tmp_path / "missing.parquet"
    spec = RepoSpec("p", redis_url, True, True, offline=DUCKDB)
    store = make_store(tmp_path / "repo", spec, lambda: parquet_views(missing))
    with pytest.raises(Exception, match=r"missing\.parquet|No files found|does not exist"):
        store.materialize(T0 - timedelta(1), T0 + timedelta(1))
    assert not store.get_feature_view("a").materialization_intervals
