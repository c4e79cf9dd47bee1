"""A throwaway copy of the example repo with freshly generated data."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DATA_END = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def copy_example_repo(dest: Path, *, rows: int = 2000) -> Path:
    """Copy ``feature_repo/`` (code only) to ``dest`` and generate its data."""
    shutil.copytree(
        ROOT / "feature_repo", dest, ignore=shutil.ignore_patterns("data", "__pycache__")
    )
    subprocess.run(
        [sys.executable, str(dest / "generate.py"), "--rows", str(rows), "--seed", "11",
         "--end", DATA_END.isoformat(), "--out", str(dest / "data")],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return dest


@pytest.fixture
def example_repo(tmp_path: Path) -> Path:
    return copy_example_repo(tmp_path / "repo")
