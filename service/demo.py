"""``featurestore demo``: the whole loop on a small generated data set.

generate Parquet -> ``feast apply`` -> ``feast materialize`` -> start the service ->
one HTTP online lookup -> the head of a point-in-time training dataset -> stop
everything that was started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd

from foundation import environment
from online_store.embedded import free_port
from service import local_backends

DEMO_REQUEST = {
    "feature_service": "ride_ranking_v1",
    "entities": {
        "driver_id": [1001, 1002, 999999],
        "customer_id": ["c_0000000", "c_0000919", "c_unknown"],
        "distance_km": [4.2, 12.0, 3.3],
        "duration_min": [11.0, 25.5, 8.0],
    },
    "full_feature_names": True,
}


def _step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def _feast(repo: Path, *args: str) -> None:
    feast = Path(sys.executable).with_name("feast")
    subprocess.run([str(feast), *args], cwd=repo, check=True)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the service exited with code {proc.returncode} before it was ready"
            )
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the service at {url} was not healthy after {timeout:.0f} s")


def training_head(repo: Path, rows: int = 5) -> pd.DataFrame:
    """A point-in-time training set for the first trips, through the training SDK."""
    import pyarrow.parquet as pq

    from foundation.registry import FeatureStore
    from offline_store.sdk import get_training_dataset

    trips = pq.read_table(environment.data_dir(repo) / "trips.parquet").slice(0, 1000).to_pandas()
    store = FeatureStore(repo_path=str(repo))
    dataset = get_training_dataset(trips, feature_service="ride_ranking_v1", store=store)
    assert isinstance(dataset, pd.DataFrame)
    return dataset.head(rows)


def run_demo(repo: Path, *, rows: int) -> int:
    """Run the loop; returns the process exit code."""
    repo = repo.resolve()
    _step(f"generating {rows:,} driver-stats rows (and related sources) under {repo / 'data'}")
    subprocess.run(
        [
            sys.executable,
            str(repo / "generate.py"),
            "--rows",
            str(rows),
            "--out",
            str(repo / "data"),
        ],
        check=True,
    )
    with local_backends.backends(repo) as env:
        print(f"registry: {env[environment.REGISTRY_ENV]}")
        print(f"redis:    {env[environment.REDIS_ENV]}")
        _step("feast apply")
        _feast(repo, "apply")
        _step("feast materialize")
        end = datetime.now(UTC) + timedelta(minutes=1)
        _feast(repo, "materialize", "2000-01-01T00:00:00", end.strftime("%Y-%m-%dT%H:%M:%S"))

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        _step(f"starting the service on {url}")
        server = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("featurestore")),
                "serve",
                "--repo",
                str(repo),
                "--port",
                str(port),
            ],
            env=os.environ.copy(),
        )
        try:
            _wait_healthy(url, server)
            _step("POST /get-online-features")
            print(json.dumps(DEMO_REQUEST))
            response = httpx.post(f"{url}/get-online-features", json=DEMO_REQUEST, timeout=10.0)
            response.raise_for_status()
            print(json.dumps(response.json(), indent=2))
        finally:
            server.terminate()
            server.wait(timeout=30)

        _step("point-in-time training dataset (head)")
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            print(training_head(repo))
    _step("done: everything the demo started has been stopped")
    return 0
