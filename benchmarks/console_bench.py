"""Console page loads: median over N full loads of each /ui page, in Debian's Chromium.

    .venv/bin/python -m benchmarks.console_bench [--loads 20] [--views 500] \
        [--out benchmarks/results/console.json]

Two registries, each served by ``featurestore serve --auth`` on a private Redis and a
SQLite registry: the example repo (``feature_repo/definitions.py``, generated data,
materialized), and the same plus ``--views`` generated feature views on the example's
driver source (the first 20 of them materialized, so statistics exist). A load is a fresh
navigation from ``about:blank`` to the page (HTML, JS, CSS and the page's API calls, key
in sessionStorage) until the page's main element is in the DOM. Prints JSON lines and
writes them to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import ROOT, backend_env, emit, wait_ready
from online_store.embedded import EmbeddedRedis, free_port
from service.auth import KeyStore, Scope, open_key_engine

BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
_EXTRA_VIEWS = """

_extra_schema = [Field(name=f.name, dtype=f.dtype) for f in driver_hourly_stats.schema
                 if f.name != "driver_id"]
for _i in range({n}):
    globals()[f"generated_view_{{_i:03d}}"] = FeatureView(
        name=f"generated_view_{{_i:03d}}", entities=[driver], ttl=timedelta(hours=1 + _i % 48),
        schema=_extra_schema, source=driver_stats_source, tags={{"generated": "true"}},
    )
"""


def _repo(path: Path, redis_url: str, registry_url: str, extra_views: int) -> datetime:
    sys.path.insert(0, str(ROOT / "feature_repo"))
    from generate import generate

    (path / "data").mkdir(parents=True)
    text = (ROOT / "feature_repo" / "definitions.py").read_text()
    (path / "definitions.py").write_text(
        text + (_EXTRA_VIEWS.format(n=extra_views) if extra_views else "")
    )
    config = {
        "project": "rides",
        "provider": "local",
        "registry": {
            "registry_type": "sql",
            "path": "${FEATURESTORE_REGISTRY_URL}",
            "cache_ttl_seconds": 5,
        },
        "online_store": {"type": "online_store.store.FastRedisOnlineStore"},
        "offline_store": {"type": "offline_store.store.DuckDBParquetOfflineStore"},
        "batch_engine": {"type": "online_store.engine.StreamingMaterializationEngine"},
        "entity_key_serialization_version": 3,
    }
    (path / "feature_store.yaml").write_text(yaml.safe_dump(config))
    end = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    generate(path / "data", rows=2000, seed=11, end=end)
    env = backend_env(redis_url, registry_url)
    feast = str(BIN / "feast")
    subprocess.run([feast, "apply"], cwd=path, env=env, check=True, capture_output=True)
    views = ["driver_hourly_stats", "customer_profile", "driver_customer_stats"]
    views += [f"generated_view_{i:03d}" for i in range(min(extra_views, 20))]
    window = [
        (end - timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%S"),
        (end + timedelta(seconds=1)).isoformat(),
    ]
    subprocess.run(
        [feast, "materialize", *window, *[arg for v in views for arg in ("--views", v)]],
        cwd=path,
        env=env,
        check=True,
        capture_output=True,
    )
    return end


def _pages(extra_views: int) -> dict[str, tuple[str, str]]:
    view = "generated_view_007" if extra_views else "driver_hourly_stats"
    return {
        "registry": ("#/registry/feature-views", "#registry-table tbody tr"),
        "registry_detail": (f"#/registry/feature-views/{view}", "#detail-name"),
        "freshness": ("#/freshness", "#freshness-table tbody tr"),
        "statistics": (f"#/statistics/{view}", "svg.histogram"),
        "datasets": ("#/datasets", "#datasets-table"),
    }


def _measure(url: str, key: str, pages: dict[str, tuple[str, str]], loads: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context()
        context.add_init_script(f"sessionStorage.setItem('featurestore.apiKey', {json.dumps(key)})")
        page = context.new_page()
        for name, (hash_, selector) in pages.items():
            times = []
            for _ in range(loads + 1):  # the first load warms the server's caches
                page.goto("about:blank")
                start = time.perf_counter()
                page.goto(f"{url}/ui{hash_}")
                page.wait_for_selector(selector, state="attached")
                times.append(time.perf_counter() - start)
            times = times[1:]
            out[name] = {
                "median_ms": round(1000 * statistics.median(times), 1),
                "max_ms": round(1000 * max(times), 1),
            }
        browser.close()
    return out


def run(extra_views: int, loads: int) -> dict[str, Any]:
    """Build, serve and measure one registry."""
    tmp = Path(tempfile.mkdtemp(prefix="console-bench-"))
    redis = EmbeddedRedis(tmp / "redis", persistent=False)
    redis.start()
    proc = None
    try:
        registry_url = f"sqlite:///{tmp / 'registry.db'}"
        _repo(tmp / "repo", redis.url, registry_url, extra_views)
        engine = open_key_engine(registry_url, 5)
        key = KeyStore(engine, project="rides").create(Scope.READ, name="bench")
        engine.dispose()
        port = free_port()
        log = tmp / "serve.log"
        proc = subprocess.Popen(
            [
                str(BIN / "featurestore"),
                "serve",
                "--repo",
                str(tmp / "repo"),
                "--port",
                str(port),
                "--auth",
            ],
            env=backend_env(redis.url, registry_url),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        wait_ready(f"{url}/health", proc, log)
        time.sleep(1)  # first registry snapshot
        return {
            "registry": "example" if not extra_views else f"example+{extra_views} views",
            "feature_views": 3 + extra_views,
            "loads": loads,
            "pages": _measure(url, key, _pages(extra_views), loads),
        }
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--views", type=int, default=500)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "console.json"
    )
    args = parser.parse_args()
    results = [run(0, args.loads), run(args.views, args.loads)]
    for result in results:
        emit(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
