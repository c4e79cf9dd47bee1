"""The seeded data generator: deterministic, streaming, realistic enough to test with."""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
END = datetime(2026, 11, 1, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "fr_generate", ROOT / "feature_repo" / "generate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fr_generate"] = module
    spec.loader.exec_module(module)
    return module


def _read_all(out: Path) -> dict[str, pa.Table]:
    return {p.stem: pq.read_table(p) for p in sorted(out.glob("*.parquet"))}


def test_same_seed_writes_the_same_rows(gen: ModuleType, tmp_path: Path) -> None:
    gen.generate(tmp_path / "a", rows=3000, seed=7, end=END)
    gen.generate(tmp_path / "b", rows=3000, seed=7, end=END)
    a, b = _read_all(tmp_path / "a"), _read_all(tmp_path / "b")
    assert (
        a.keys()
        == b.keys()
        == {"driver_stats", "customer_profile", "driver_customer_stats", "trips"}
    )
    for name in a:
        assert a[name].equals(b[name]), name


def test_other_seed_writes_other_rows(gen: ModuleType, tmp_path: Path) -> None:
    gen.generate(tmp_path / "a", rows=3000, seed=7, end=END)
    gen.generate(tmp_path / "b", rows=3000, seed=8, end=END)
    a, b = _read_all(tmp_path / "a"), _read_all(tmp_path / "b")
    assert not a["driver_stats"].equals(b["driver_stats"])


def test_streams_in_bounded_chunks_across_row_groups(
    gen: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gen, "CHUNK_ROWS", 1000)
    counts = gen.generate(tmp_path, rows=5000, seed=1, end=END)
    meta = pq.ParquetFile(tmp_path / "driver_stats.parquet").metadata
    assert meta.num_row_groups >= 5  # one row group per chunk: never the whole table at once
    assert meta.num_rows == counts["driver_stats"]
    assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= 1000 * 1.05


def test_every_source_has_nulls_and_corrections(gen: ModuleType, tmp_path: Path) -> None:
    gen.generate(tmp_path, rows=20_000, seed=3, end=END)
    tables = _read_all(tmp_path)
    keys = {
        "driver_stats": ["driver_id"],
        "customer_profile": ["customer_id"],
        "driver_customer_stats": ["driver_id", "customer_id"],
    }
    for name, join_keys in keys.items():
        table = tables[name]
        features = [
            c for c in table.column_names if c not in (*join_keys, "event_timestamp", "created")
        ]
        assert sum(table[c].null_count for c in features) > 0, f"{name} has no nulls"
        groups = table.group_by([*join_keys, "event_timestamp"]).aggregate(
            [("created", "count_distinct")]
        )
        corrected = pc.sum(pc.greater(groups["created_count_distinct"], 1)).as_py()
        assert corrected is not None
        assert corrected > 0, f"{name} has no corrections"


def test_timestamps_are_utc_and_not_after_end(gen: ModuleType, tmp_path: Path) -> None:
    gen.generate(tmp_path, rows=2000, seed=5, end=END)
    for name, table in _read_all(tmp_path).items():
        ts = table["event_timestamp"]
        assert ts.type == pa.timestamp("us", tz="UTC"), name
        assert pc.max(ts).as_py() <= END, name


def test_each_driver_has_a_row_inside_the_one_day_ttl(gen: ModuleType, tmp_path: Path) -> None:
    gen.generate(tmp_path, rows=2000, seed=5, end=END)
    stats = _read_all(tmp_path)["driver_stats"]
    newest = stats.group_by("driver_id").aggregate([("event_timestamp", "max")])
    ages = [END - ts for ts in newest["event_timestamp_max"].to_pylist()]
    assert len(ages) == 200
    assert all(age.total_seconds() <= 86_400 for age in ages)
