"""Metrics stay per app even after Feast switches prometheus_client to multiprocess mode."""

from __future__ import annotations

import importlib
import os

from service.metrics import Metrics


def _count(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        "featurestore_http_requests_total",
        {"route": "/get-online-features", "method": "POST", "status": "200"},
    )
    return value or 0.0


def test_two_apps_in_one_process_count_their_own_requests() -> None:
    importlib.import_module("feast.metrics")  # sets PROMETHEUS_MULTIPROCESS_DIR
    assert "PROMETHEUS_MULTIPROCESS_DIR" in os.environ
    first, second = Metrics(), Metrics()
    for _ in range(3):
        first.observe_request("/get-online-features", "POST", 200, 0.001)
    second.observe_request("/get-online-features", "POST", 200, 0.001)
    assert _count(first) == 3
    assert _count(second) == 1
