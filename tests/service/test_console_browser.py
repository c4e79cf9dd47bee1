"""The /ui console in a real browser (Debian's Chromium through Playwright) against a live
``featurestore serve`` with API keys on.

The repo's data ends three days ago, so ``driver_hourly_stats`` (TTL one day) is stale and
``driver_customer_stats`` (TTL 30 days) is fresh. A screenshot of each page is kept under
``test-artifacts/console/``; a JavaScript error, a console error or a request to anywhere
but the service fails the test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa
from feast import FeatureStore
from playwright.sync_api import Page, sync_playwright

from foundation.statistics import profile
from foundation.stats_log import FEATURE_VIEW, StatisticsLog
from offline_store.saved import save_training_dataset
from online_store.embedded import EmbeddedRedis
from service.auth import KeyStore, Scope, open_key_engine
from tests.service.conftest import ROOT, Repo, ServeProcess, build_repo

CHROMIUM = "/usr/bin/chromium"
ARTEFACTS = ROOT / "test-artifacts" / "console"
Server = tuple[ServeProcess, str]


@pytest.fixture(scope="module")
def stale_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    path = tmp_path_factory.mktemp("console-repo")
    server = EmbeddedRedis(path / "redis", persistent=False)
    server.start()
    try:
        end = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)
        yield build_repo(
            path / "repo",
            registry_url=f"sqlite:///{path / 'registry.db'}",
            redis_url=server.url,
            end=end,
        )
    finally:
        server.stop()


def _drift(repo: Repo) -> None:
    """A saved dataset of driver ratings, then a newer window whose ratings moved up."""
    saved_env = {k: os.environ.get(k) for k in ("FEATURESTORE_REGISTRY_URL",)}
    os.environ["FEATURESTORE_REGISTRY_URL"] = repo.registry_url
    try:
        store = FeatureStore(repo_path=str(repo.path))
        latest = pd.DataFrame(list(repo.latest("driver_stats", ["driver_id"]).values()))
        entities = pd.DataFrame({"driver_id": latest["driver_id"], "event_timestamp": repo.end})
        save_training_dataset(
            entities, ["driver_hourly_stats:avg_rating"], name="ratings", store=store
        )
    finally:
        for k, v in saved_env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    shifted = latest["avg_rating"].to_numpy() + 2 * latest["avg_rating"].std()
    table = pa.table(
        {"avg_rating": shifted + np.random.default_rng(1).normal(0, 0.01, len(latest))}
    )
    engine = sa.create_engine(repo.registry_url)
    StatisticsLog(engine, "rides").record(
        subject_kind=FEATURE_VIEW,
        subject_name="driver_hourly_stats",
        columns=profile(table),
        row_count=table.num_rows,
        source="window",
    )
    engine.dispose()


@pytest.fixture(scope="module")
def server(stale_repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    engine = open_key_engine(stale_repo.registry_url, 5)
    key = KeyStore(engine, project="rides").create(Scope.READ, name="console")
    engine.dispose()
    log = tmp_path_factory.mktemp("console-log") / "serve.log"
    process = ServeProcess(stale_repo, log, "--auth")
    yield process, key
    output = process.stop()
    assert key.split("_", 2)[2] not in output  # the secret is never logged


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Page]:
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    # Nothing may leave the service: any other origin is recorded and refused.
    origin = server[0].url

    def outside(route: Any) -> None:
        errors.append(f"request outside the service: {route.request.url}")
        route.abort()

    context.route(lambda url: not url.startswith(origin), outside)
    tab = context.new_page()
    tab.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield tab
    context.close()
    assert errors == []


def _shot(page: Page, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


def _login(page: Page, server: Server, hash_: str = "") -> None:
    process, key = server
    page.goto(f"{process.url}/ui{hash_}")
    page.wait_for_selector("#key-prompt")
    page.fill("#key-input", key)
    page.click("#key-prompt button")


def test_key_prompt_refuses_a_bad_key_and_keeps_a_good_one_out_of_urls(
    page: Page, server: Server
) -> None:
    process, key = server
    assert httpx.get(f"{process.url}/registry/feature-views").status_code == 401
    page.goto(f"{process.url}/ui")
    page.wait_for_selector("#key-prompt")
    _shot(page, "key-prompt")
    page.fill("#key-input", "fsk_nope_nope")
    page.click("#key-prompt button")
    page.wait_for_selector("#key-error:not([hidden])")
    assert "key" in page.inner_text("#key-error").lower()
    page.fill("#key-input", key)
    page.click("#key-prompt button")
    page.wait_for_selector("#registry-table")
    assert key not in page.url
    assert page.evaluate("sessionStorage.getItem('featurestore.apiKey')") == key
    page.reload()  # same tab: the key is kept, no second prompt
    page.wait_for_selector("#registry-table")


def test_registry_pages_show_definitions_and_where_used(page: Page, server: Server) -> None:
    _login(page, server)
    page.wait_for_selector("#registry-table")
    names = page.locator("#registry-table tbody tr td:first-child").all_inner_texts()
    assert names == ["customer_profile", "driver_customer_stats", "driver_hourly_stats"]
    _shot(page, "registry-feature-views")
    for kind, expected in (
        ("entities", {"driver", "customer"}),
        ("on-demand-feature-views", {"fare_estimate"}),
        ("feature-services", {"ride_ranking_v1"}),
        ("data-sources", {"driver_stats_source", "driver_stats_push"}),
    ):
        page.click(f"a.tab[href='#/registry/{kind}']")
        page.wait_for_selector(f"a.tab.active[href='#/registry/{kind}']")
        shown = set(page.locator("#registry-table tbody tr td:first-child").all_inner_texts())
        assert expected <= shown, kind
        _shot(page, f"registry-{kind}")
    page.click("text=driver_stats_source")
    page.wait_for_selector("#detail-name")
    assert "driver_hourly_stats" in page.inner_text("#used-by")
    assert "driver_stats.parquet" in page.inner_text("pre.definition")
    page.goto(f"{server[0].url}/ui#/registry/feature-views/driver_hourly_stats")
    page.wait_for_selector("#detail-name")
    assert "ride_ranking_v1" in page.inner_text("#used-by")
    _shot(page, "registry-view-detail")


def test_freshness_board_shows_the_stale_view_as_stale(page: Page, server: Server) -> None:
    _login(page, server, "#/freshness")
    page.wait_for_selector("#freshness-table")
    rows = {
        row.locator("td").first.inner_text(): row.get_attribute("class")
        for row in page.locator("#freshness-table tbody tr").all()
    }
    assert rows["driver_hourly_stats"] == "status-stale"  # 3 days old, TTL 1 day
    assert rows["driver_customer_stats"] == "status-fresh"  # TTL 30 days
    assert rows["customer_profile"] == "status-fresh"  # TTL 0: never expires
    _shot(page, "freshness")


def test_histogram_bars_match_the_statistics_api(page: Page, server: Server) -> None:
    process, key = server
    runs = httpx.get(
        f"{process.url}/statistics/feature-views/driver_customer_stats",
        headers={"Authorization": f"Bearer {key}"},
    ).json()
    column = next(c for c in runs[0]["columns"] if c["name"] == "avg_tip")
    counts = [b["count"] for b in column["histogram"]]
    _login(page, server, "#/statistics/driver_customer_stats")
    chart = page.locator("svg.histogram[data-column='avg_tip']")
    chart.wait_for()
    bars = chart.locator("rect.bar")
    assert bars.count() == len(counts) == 20
    heights = [float(bars.nth(i).get_attribute("height") or 0) for i in range(bars.count())]
    assert [
        int(bars.nth(i).get_attribute("data-count") or -1) for i in range(len(counts))
    ] == counts
    tallest = max(heights)
    for height, count in zip(heights, counts, strict=True):
        assert height / tallest == pytest.approx(count / max(counts), abs=0.01)
    assert page.locator("svg.series[data-column='avg_tip'] polyline").count() == 2
    _shot(page, "statistics-view")


def test_a_drifted_dataset_is_flagged(page: Page, server: Server, stale_repo: Repo) -> None:
    _drift(stale_repo)
    _login(page, server, "#/datasets")
    page.wait_for_selector("#datasets-table")
    row = page.locator("#datasets-table tbody tr").first
    assert "ratings" in row.inner_text()
    _shot(page, "datasets")
    page.click("#datasets-table a:text('ratings')")
    page.wait_for_selector("#drift-table")
    assert page.inner_text(".drift-flag").startswith("Drift detected")
    assert page.locator("#drift-table tr.drifted[data-feature='avg_rating']").count() == 1
    assert "driver_hourly_stats:avg_rating" in page.inner_text("#dataset-about")
    _shot(page, "dataset-drift")


def test_tables_stay_usable_with_500_rows(page: Page, server: Server) -> None:
    """The console's one table component, fed 500 feature views: a page at a time, filtered."""
    _login(page, server)
    page.wait_for_selector("#registry-table")
    page.evaluate(
        """() => {
          const name = (i) => `view_${String(i).padStart(3, "0")}`;
          const rows = Array.from({length: 500}, (_, i) => ({name: name(i)}));
          main.innerHTML = '<section id="many"></section>';
          table(document.getElementById("many"), rows, [{title: "Name", html: (r) => esc(r.name)}],
                {filter: (r) => r.name, id: "many-table"});
        }"""
    )
    body = page.locator("#many-table tbody tr")
    assert body.count() == 50
    assert page.inner_text("#many .count") == "500 of 500"
    assert page.inner_text("#many .page") == "page 1 / 10"
    page.click("#many .next")
    assert body.first.inner_text() == "view_050"
    page.fill("#many .filter", "view_49")
    assert body.all_inner_texts() == [f"view_49{i}" for i in range(10)]
    assert page.inner_text("#many .count") == "10 of 500"
    _shot(page, "table-500-filtered")
