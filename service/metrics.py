"""Prometheus metrics and the ASGI middleware that records them.

Each app has its own :class:`CollectorRegistry` (tests build many apps in one
process). With ``--workers N`` each worker process exports its own counters;
Prometheus sums them across scrapes of the instances as usual.

Importing ``feast.metrics`` sets ``PROMETHEUS_MULTIPROCESS_DIR``, which switches
prometheus_client to values in shared memory-mapped files keyed only by metric name
and labels: two apps in one process would then count into the same slots. Our values
are plain in-process ones whatever that variable says (:func:`_in_process_values`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.catalog import Catalog

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
_SHARED_CALL_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 63)
_REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


class _FreshnessCollector(Collector):
    """Per-view freshness computed at scrape time from the registry snapshot."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        freshness = GaugeMetricFamily(
            "featurestore_feature_view_freshness_seconds",
            "Now minus the newest event time written to the online store for the view "
            "(by materialization, or pushed through this process).",
            labels=["feature_view"],
        )
        catalog = self._metrics.catalog
        snapshot = catalog._snapshot if catalog is not None else None
        if snapshot is not None:
            now = datetime.now(UTC)
            for name in snapshot.views:
                written = (
                    snapshot.newest_events.get(name),
                    self._metrics.pushed_event_times.get(name),
                )
                newest = max((t for t in written if t is not None), default=None)
                if newest is not None:
                    # Never negative: an event time ahead of the clock (refused at the
                    # door, but a clock step back or an old record can still leave one)
                    # reads as "just written", not as an alert-blinding -2.5e11 s.
                    freshness.add_metric([name], max(0.0, (now - newest).total_seconds()))
        yield freshness


@contextmanager
def _in_process_values() -> Iterator[None]:
    # prometheus_client reads `values.ValueClass` whenever a metric child is created.
    saved = prometheus_values.ValueClass
    prometheus_values.ValueClass = prometheus_values.MutexValue
    try:
        yield
    finally:
        prometheus_values.ValueClass = saved


class Metrics:
    """The service's metrics, registered on a private registry.

    The catalog (source of registry age and per-view freshness) is attached by the
    lifespan with :meth:`bind`, after the middleware already holds this object.
    """

    def __init__(self) -> None:
        with _in_process_values():
            self._build()

    def _build(self) -> None:
        self.catalog: Catalog | None = None
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "featurestore_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "featurestore_http_request_duration_seconds",
            "HTTP request latency by route template, method and status.",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.redis_latency = Histogram(
            "featurestore_redis_call_duration_seconds",
            "Latency of Redis calls (one pipelined round trip each) by operation.",
            ["operation"],
            buckets=_REDIS_BUCKETS,
            registry=self.registry,
        )
        registry_age = Gauge(
            "featurestore_registry_age_seconds",
            "Seconds since the registry was last read successfully.",
            registry=self.registry,
        )
        registry_age.set_function(
            lambda: self.catalog.age_seconds() if self.catalog is not None else float("inf")
        )
        self.drift = Gauge(
            "featurestore_feature_drift_psi",
            "Population stability index of a saved training dataset's feature against the "
            "latest window of its feature view, as last computed (GET /statistics/drift).",
            ["training_dataset", "feature"],
            registry=self.registry,
        )
        self._drift_children: dict[tuple[str, str], Any] = {}
        self.shared_calls = Histogram(
            "featurestore_odfv_shared_call_lookups",
            "Lookups answered by one call of a row-wise on-demand view's transformation.",
            ["feature_view"],
            buckets=_SHARED_CALL_BUCKETS,
            registry=self.registry,
        )
        self._shared_children: dict[str, Any] = {}
        self.row_wise_mismatches = Counter(
            "featurestore_odfv_row_wise_mismatches",
            "Checked shared calls of a view tagged row-wise that answered otherwise than one "
            "lookup at a time (its lookups are no longer shared in that worker).",
            ["feature_view"],
            registry=self.registry,
        )
        self.pushed_event_times: dict[str, datetime] = {}
        self.registry.register(_FreshnessCollector(self))
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._redis_children: dict[str, Any] = {}

    def bind(self, catalog: Catalog) -> None:
        """Report registry age and freshness from ``catalog``."""
        self.catalog = catalog

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request and record its latency."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            labels = (route, method, str(status))
            with _in_process_values():
                children = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def redis_observer(self, operation: str) -> Callable[[float], None]:
        """A callback recording Redis call durations for ``operation``."""
        child = self._redis_children.get(operation)
        if child is None:
            with _in_process_values():
                child = self.redis_latency.labels(operation)
            self._redis_children[operation] = child
        return child.observe  # type: ignore[no-any-return]

    def observe_shared_call(self, view: str, lookups: int) -> None:
        """Record one call of row-wise view ``view`` that answered ``lookups`` lookups."""
        child = self._shared_children.get(view)
        if child is None:
            with _in_process_values():
                child = self.shared_calls.labels(view)
            self._shared_children[view] = child
        child.observe(lookups)

    def note_row_wise_mismatch(self, view: str) -> None:
        """Count a checked shared call of ``view`` that broke its row-wise promise."""
        with _in_process_values():
            self.row_wise_mismatches.labels(view).inc()

    def note_pushed(self, view: str, newest: datetime) -> None:
        """Remember the newest event time written to ``view`` by this process.

        Clamped to the current time, so one write ahead of the clock cannot freeze the
        freshness gauge at a value no later write can beat.

        Args:
            view: the feature view written.
            newest: the greatest event time the write stored (naive = UTC).
        """
        if newest.tzinfo is None:
            newest = newest.replace(tzinfo=UTC)
        newest = min(newest, datetime.now(UTC))
        current = self.pushed_event_times.get(view)
        if current is None or newest > current:
            self.pushed_event_times[view] = newest

    def note_drift(self, dataset: str, feature: str, psi: float) -> None:
        """Set the drift gauge of one feature of a saved dataset."""
        key = (dataset, feature)
        child = self._drift_children.get(key)
        if child is None:
            with _in_process_values():
                child = self.drift.labels(dataset, feature)
            self._drift_children[key] = child
        child.set(psi)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task like ``BaseHTTPMiddleware``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # Route templates (not raw paths) keep label cardinality bounded.
            path = getattr(route, "path", None) or "<unmatched>"
            self.metrics.observe_request(
                path, scope["method"], status, time.perf_counter() - started
            )
