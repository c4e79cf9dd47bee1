"""The work of the materialization DAG, free of Airflow so it can be tested and reused.

Each function opens the store from a :class:`~pipelines.config.StoreConfig`, so an Airflow
task is a thin call: list the online views, ``materialize-incremental`` one view with the
repo's engine (ours converges, so a retried or rerun task rewrites nothing older), then
compare each view's newest materialized event time with its freshness threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from foundation.errors import FeatureStoreError, InvalidRequestError
from foundation.registry import FeatureStore, stored_feature_views
from online_store.freshness import FreshnessLog
from pipelines.config import StoreConfig, store_environment


class StaleFeaturesError(FeatureStoreError):
    """A feature view's newest materialized row is older than its freshness threshold."""

    status_code = 503
    error_type = "stale_features"


@dataclass(frozen=True, slots=True)
class ViewFreshness:
    """How fresh one view's online rows are.

    Attributes:
        feature_view: the view.
        newest_event_at: the newest event time materialized (``None``: never materialized).
        age_seconds: now minus that time (``None`` when never materialized).
        max_age_seconds: the threshold it is held to.
        stale: older than the threshold, or never materialized.
    """

    feature_view: str
    newest_event_at: datetime | None
    age_seconds: float | None
    max_age_seconds: float
    stale: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (an Airflow XCom)."""
        out = asdict(self)
        out["newest_event_at"] = self.newest_event_at.isoformat() if self.newest_event_at else None
        return out


def open_store(config: StoreConfig) -> FeatureStore:
    """A Feast store on the configured repo (call inside :func:`store_environment`)."""
    return FeatureStore(repo_path=str(config.repo_path))


def online_feature_views(config: StoreConfig) -> list[str]:
    """Names of the repo's feature views that are materialized (``online=True``), sorted."""
    with store_environment(config):
        store = open_store(config)
        return sorted(v.name for v in stored_feature_views(store) if v.online)


def materialize_view(config: StoreConfig, feature_view: str, end: datetime) -> dict[str, Any]:
    """``materialize-incremental`` one view up to ``end`` with the repo's batch engine.

    Feast starts where the view's last recorded interval ended (the first time: ``end``
    minus the TTL, or a year for unlimited views), so reruns only redo what is new, and our
    engine never lets an older row replace a newer one in Redis.

    Returns:
        ``{"feature_view", "end", "newest_event_at"}``, the last one from the freshness log.

    Raises:
        InvalidRequestError: unknown or offline-only view.
    """
    with store_environment(config):
        store = open_store(config)
        online = {v.name: v for v in stored_feature_views(store) if v.online}
        if feature_view not in online:
            raise InvalidRequestError(
                f"feature view {feature_view!r} is not an online view of project "
                f"{store.project!r} (online views: {sorted(online)}); run `feast apply`",
                feature_view=feature_view,
            )
        done_until = online[feature_view].most_recent_end_time
        # A rerun of an older interval finds the view already past its end: nothing to do.
        if done_until is None or done_until.astimezone(UTC) < end.astimezone(UTC):
            store.materialize_incremental(end_date=end, feature_views=[feature_view])
        newest = newest_events(config, store.project).get(feature_view)
    return {
        "feature_view": feature_view,
        "end": end.isoformat(),
        "newest_event_at": newest.isoformat() if newest else None,
    }


def newest_events(config: StoreConfig, project: str) -> dict[str, datetime]:
    """The newest materialized event time per view, as the engine recorded it."""
    engine = sa.create_engine(config.sqlalchemy_url)
    try:
        return FreshnessLog(engine, project).newest_events()
    finally:
        engine.dispose()


def view_thresholds(
    config: StoreConfig,
    overrides: dict[str, float] | None,
    default_max_age_seconds: float,
) -> dict[str, float]:
    """The freshness threshold of each online view, in seconds.

    A view's own TTL is the natural limit (older rows read back as ``OUTSIDE_MAX_AGE``);
    views without a TTL get ``default_max_age_seconds``; ``overrides`` win over both.

    Raises:
        InvalidRequestError: an override names a view the repo does not materialize, or a
            threshold is not positive.
    """
    with store_environment(config):
        views = {v.name: v for v in stored_feature_views(open_store(config)) if v.online}
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(views))
    if unknown:
        raise InvalidRequestError(
            f"freshness thresholds name unknown views {unknown}; online views: {sorted(views)}"
        )
    limits: dict[str, float] = {}
    for name, view in views.items():
        ttl = view.ttl.total_seconds() if view.ttl else 0.0
        limits[name] = float(overrides.get(name, ttl or default_max_age_seconds))
        if limits[name] <= 0:
            raise InvalidRequestError(
                f"freshness threshold of {name!r} must be positive seconds, got {limits[name]}"
            )
    return limits


def check_freshness(
    config: StoreConfig,
    thresholds: dict[str, float],
    *,
    now: datetime | None = None,
) -> list[ViewFreshness]:
    """Compare each view's newest materialized event with its threshold.

    Args:
        config: the store.
        thresholds: seconds per view (see :func:`view_thresholds`).
        now: the reference time (default: now, UTC).

    Returns:
        One record per view, sorted by name.

    Raises:
        StaleFeaturesError: at least one view is stale or was never materialized; the
            message names each one and its age.
    """
    now = now or datetime.now(UTC)
    with store_environment(config):
        project = open_store(config).project
    newest = newest_events(config, project)
    report: list[ViewFreshness] = []
    for view, limit in sorted(thresholds.items()):
        at = newest.get(view)
        age = (now - at).total_seconds() if at else None
        report.append(ViewFreshness(view, at, age, limit, age is None or age > limit))
    stale = [r for r in report if r.stale]
    if stale:
        described = ", ".join(
            f"{r.feature_view} "
            + ("never materialized" if r.age_seconds is None else f"{r.age_seconds:.0f}s old")
            + f" (limit {r.max_age_seconds:.0f}s)"
            for r in stale
        )
        raise StaleFeaturesError(
            f"stale feature views: {described}; check the sources feeding them and rerun "
            "materialization",
            stale=[r.to_dict() for r in stale],
        )
    return report
