"""The registry as the service sees it: an immutable snapshot, refreshed in the background.

Request handlers never parse the registry. A background task re-reads it every
``registry_refresh_seconds`` (in a worker thread: the SQL registry is blocking),
fingerprints the result and, only when something changed, swaps in a new
:class:`RegistrySnapshot`. Compiled read plans hang off the snapshot, so a swap
drops them all at once and a ``feast apply`` shows up without a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from threading import Lock
from typing import Any, Generic, TypeVar

from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, OnDemandFeatureView
from feast.data_source import PushSource
from feast.value_type import ValueType

from foundation.errors import (
    BackendUnavailableError,
    FeatureServiceNotFoundError,
    FeatureViewNotFoundError,
    NotFoundError,
)
from online_store.freshness import FreshnessLog

log = logging.getLogger(__name__)

T = TypeVar("T")
_PLAN_CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class FeatureInfo:
    """One feature column of a view."""

    name: str
    value_type: ValueType
    dtype: str


@dataclass(frozen=True, slots=True)
class ReadInfo:
    """What a lookup needs to read a view's stored values from Redis, precomputed."""

    name: str
    join_keys: tuple[str, ...]
    join_key_types: tuple[ValueType, ...]
    features: dict[str, FeatureInfo]
    ttl_micros: int  # exact: a 500 ms TTL is 500_000, not 0 (= never expires)
    version: int  # Feast's current version number of the view (0: unversioned)

    @property
    def ttl_seconds(self) -> int | float:
        """The TTL as shown to people: whole seconds as an int, else a fraction."""
        seconds, micros = divmod(self.ttl_micros, 1_000_000)
        return seconds if not micros else self.ttl_micros / 1_000_000


@dataclass(frozen=True, slots=True)
class ViewInfo(ReadInfo):
    """A batch (or stream) feature view: read, pushed to, materialized."""

    view: FeatureView


class PlanCache(Generic[T]):
    """A small thread-safe LRU: callers may send any feature list, so it must be bounded."""

    def __init__(self, size: int = _PLAN_CACHE_SIZE) -> None:
        self._size = size
        self._items: OrderedDict[Hashable, T] = OrderedDict()
        self._lock = Lock()

    def get_or_build(self, key: Hashable, build: Callable[[], T]) -> T:
        """The cached value for ``key``, building (outside the lock) on a miss."""
        item = self._items.get(key)
        if item is not None:
            return item
        built = build()
        with self._lock:
            self._items[key] = built
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        return built

    def __len__(self) -> int:
        return len(self._items)


def _features(fields: list[Field]) -> dict[str, FeatureInfo]:
    return {f.name: FeatureInfo(f.name, f.dtype.to_value_type(), str(f.dtype)) for f in fields}


def _version(view: FeatureView | OnDemandFeatureView) -> int:
    return int(getattr(view, "current_version_number", 0) or 0)


def _view_info(view: FeatureView) -> ViewInfo:
    entity_columns = list(view.entity_columns)
    return ViewInfo(
        name=view.name,
        join_keys=tuple(c.name for c in entity_columns),
        join_key_types=tuple(c.dtype.to_value_type() for c in entity_columns),
        features=_features(view.features),
        ttl_micros=view.ttl // timedelta(microseconds=1) if view.ttl else 0,
        version=_version(view),
        view=view,
    )


def _stored_odfv_info(
    view: OnDemandFeatureView, entities: dict[str, Entity], key_types: dict[str, ValueType]
) -> ReadInfo:
    """An on-demand view with ``write_to_online_store=True``: its outputs are stored under
    its entities' join keys (Feast reads them like a feature view's, without a TTL).

    A key's type is the view's own entity column's, else what the feature views keyed by
    it declare (``key_types``; an entity without ``value_type`` says nothing), else the
    entity's."""
    declared = {c.name: c.dtype.to_value_type() for c in view.entity_columns}
    keyed = [entities[name] for name in view.entities or () if name in entities]
    return ReadInfo(
        name=view.name,
        join_keys=tuple(e.join_key for e in keyed),
        join_key_types=tuple(
            declared.get(e.join_key) or key_types.get(e.join_key) or e.value_type for e in keyed
        ),
        features=_features(view.features),
        ttl_micros=0,
        version=_version(view),
    )


@dataclass(slots=True)
class RegistrySnapshot:
    """Everything the registry held at one refresh, indexed by name."""

    project: str
    fingerprint: str
    loaded_at: datetime
    entities: dict[str, Entity]
    views: dict[str, ViewInfo]
    on_demand_views: dict[str, OnDemandFeatureView]
    feature_services: dict[str, FeatureService]
    push_sources: dict[str, list[str]]
    readable: dict[str, ReadInfo]
    """What lookups read from Redis by name: ``views`` and the on-demand views with
    ``write_to_online_store=True``."""
    newest_events: dict[str, datetime] = field(default_factory=dict)
    """Newest materialized event time per view (:mod:`online_store.freshness`)."""
    plans: PlanCache[Any] = field(default_factory=PlanCache)

    def view(self, name: str) -> ViewInfo:
        """The batch feature view ``name``.

        Raises:
            FeatureViewNotFoundError: no such view in the project.
        """
        try:
            return self.views[name]
        except KeyError:
            raise FeatureViewNotFoundError(
                f"feature view {name!r} not in project {self.project!r}; known views: "
                f"{sorted(self.views)}; run `feast apply` in the repo if it is new",
                feature_view=name,
            ) from None

    def feature_service(self, name: str) -> FeatureService:
        """The feature service ``name``.

        Raises:
            FeatureServiceNotFoundError: no such service in the project.
        """
        try:
            return self.feature_services[name]
        except KeyError:
            raise FeatureServiceNotFoundError(
                f"feature service {name!r} not in project {self.project!r}; known services: "
                f"{sorted(self.feature_services)}",
                feature_service=name,
            ) from None

    def entity(self, name: str) -> Entity:
        """The entity ``name``.

        Raises:
            NotFoundError: no such entity in the project.
        """
        try:
            return self.entities[name]
        except KeyError:
            raise NotFoundError(
                f"entity {name!r} not in project {self.project!r}; known entities: "
                f"{sorted(self.entities)}",
                entity=name,
            ) from None


def freshness_log(store: FeatureStore) -> FreshnessLog | None:
    """The engine's freshness records next to a SQL registry (``None`` for other kinds)."""
    engine = getattr(store.registry, "write_engine", None)
    return FreshnessLog(engine, store.project) if engine is not None else None


def load_snapshot(
    store: FeatureStore,
    *,
    previous: RegistrySnapshot | None,
    freshness: FreshnessLog | None = None,
) -> RegistrySnapshot:
    """Re-read the registry (blocking) and return a snapshot.

    Args:
        store: the Feast store whose registry to read.
        previous: the current snapshot; returned as is when nothing changed, so its
            compiled plans survive.
        freshness: where the engine records the newest event it materialized per view.
            Read only when the registry changed: every materialization changes it (Feast
            appends the interval after the engine has recorded).

    Returns:
        A snapshot of the registry now.
    """
    registry = store.registry
    store.refresh_registry()
    proto = getattr(registry, "cached_registry_proto", None)
    if proto is not None and proto.version_id:
        # A digest of the content (foundation.registry), or the id Feast's file
        # registry writes with every change.
        fingerprint = proto.version_id
    elif proto is not None:
        fingerprint = hashlib.blake2b(
            proto.SerializeToString(deterministic=True), digest_size=16
        ).hexdigest()
    else:  # registries without a cached proto: rebuild every time
        fingerprint = f"t{time.time_ns()}"
    now = datetime.now(UTC)
    if previous is not None and previous.fingerprint == fingerprint:
        previous.loaded_at = now
        return previous
    project = store.project
    # Stream feature views are served, pushed to and materialized like batch ones.
    views = [
        *registry.list_feature_views(project, allow_cache=True),
        *registry.list_stream_feature_views(project, allow_cache=True),
    ]
    push_sources: dict[str, list[str]] = {}
    for view in views:
        source = view.stream_source
        if isinstance(source, PushSource):
            push_sources.setdefault(source.name, []).append(view.name)
    for source in registry.list_data_sources(project, allow_cache=True):
        if isinstance(source, PushSource):
            push_sources.setdefault(source.name, [])
    entities = {e.name: e for e in registry.list_entities(project, allow_cache=True)}
    infos = {v.name: _view_info(v) for v in views}
    on_demand = {
        v.name: v for v in registry.list_on_demand_feature_views(project, allow_cache=True)
    }
    key_types = {
        key: value_type
        for info in infos.values()
        for key, value_type in zip(info.join_keys, info.join_key_types, strict=True)
    }
    stored = {
        name: _stored_odfv_info(v, entities, key_types)
        for name, v in on_demand.items()
        if v.write_to_online_store
    }
    return RegistrySnapshot(
        project=project,
        fingerprint=fingerprint,
        loaded_at=now,
        entities=entities,
        views=infos,
        on_demand_views=on_demand,
        readable={**infos, **stored},
        feature_services={
            s.name: s for s in registry.list_feature_services(project, allow_cache=True)
        },
        push_sources=push_sources,
        newest_events=freshness.newest_events() if freshness is not None else {},
    )


class Catalog:
    """Holds the current :class:`RegistrySnapshot` and refreshes it in the background.

    Args:
        store: the Feast store.
        refresh_seconds: interval between background refreshes.
        timeout_seconds: how long one refresh may take before it counts as failed.
    """

    def __init__(
        self, store: FeatureStore, *, refresh_seconds: float, timeout_seconds: float = 10.0
    ) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.timeout_seconds = timeout_seconds
        self._inflight: asyncio.Future[RegistrySnapshot] | None = None
        self._snapshot: RegistrySnapshot | None = None
        self.last_success_monotonic: float | None = None
        self.last_error: str | None = None
        self._marker: datetime | None = None
        self._last_full = 0.0
        self._freshness: FreshnessLog | None = None

    def _probe(self) -> datetime | None:
        # The SQL registry stamps every apply (and materialization) in one metadata row;
        # reading it is one indexed query instead of rebuilding and parsing every object,
        # which would hold the GIL (and stall requests) for tens of milliseconds.
        getter = getattr(self.store.registry, "_get_last_updated_metadata", None)
        if getter is None:
            return None
        marker: datetime | None = getter(self.store.project)
        return marker

    def _unchanged(self, marker: datetime | None) -> bool:
        if marker is None or self._snapshot is None or marker != self._marker:
            return False
        # The stamp has one-second resolution: reload while a change may share its second,
        # and fully every 10 minutes as a safety net (a full rebuild holds the GIL long
        # enough to show in tail latency, so not more often).
        now = time.time()
        return now - marker.timestamp() > 2 and time.monotonic() - self._last_full < 600

    @property
    def snapshot(self) -> RegistrySnapshot:
        """The current snapshot.

        Raises:
            BackendUnavailableError: the registry was never read successfully.
        """
        if self._snapshot is None:
            raise BackendUnavailableError(
                "the registry has not been loaded yet; check FEATURESTORE_REGISTRY_URL and "
                "that `feast apply` has run (the server log and /ready with a key say why)"
            )
        return self._snapshot

    def age_seconds(self) -> float:
        """Seconds since the last successful refresh (inf when never)."""
        if self.last_success_monotonic is None:
            return float("inf")
        return time.monotonic() - self.last_success_monotonic

    def reload(self) -> RegistrySnapshot:
        """Refresh now (blocking; call from a worker thread in async code).

        Raises:
            BackendUnavailableError: the registry could not be read.
        """
        try:
            marker = self._probe()
            if self._unchanged(marker):
                self.last_success_monotonic = time.monotonic()
                self.last_error = None
                assert self._snapshot is not None
                return self._snapshot
            if self._freshness is None:
                # Not in __init__: opening the registry connects, and it may be down.
                self._freshness = freshness_log(self.store)
            snapshot = load_snapshot(self.store, previous=self._snapshot, freshness=self._freshness)
            self._marker = marker
            self._last_full = time.monotonic()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("cannot read the registry: %s", self.last_error)
            raise BackendUnavailableError(
                f"cannot read the registry ({type(exc).__name__}); retry shortly",
                backend="registry",
            ) from exc
        changed = snapshot is not self._snapshot
        self._snapshot = snapshot
        self.last_success_monotonic = time.monotonic()
        self.last_error = None
        if changed:
            log.info("registry snapshot %s loaded", snapshot.fingerprint[:8])
        return snapshot

    async def reload_async(self) -> RegistrySnapshot:
        """:meth:`reload` in a thread, bounded by ``timeout_seconds``.

        A registry call that hangs (a database that stopped answering) is not started
        again while it is still running: later calls wait on the same one.

        Raises:
            BackendUnavailableError: the registry could not be read in time.
        """
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(asyncio.to_thread(self.reload))
        try:
            return await asyncio.wait_for(asyncio.shield(self._inflight), self.timeout_seconds)
        except TimeoutError:
            self.last_error = f"no answer within {self.timeout_seconds:g} s"
            raise BackendUnavailableError(
                f"cannot read the registry: {self.last_error}", backend="registry"
            ) from None

    async def refresh_forever(self) -> None:
        """Background loop: refresh every ``refresh_seconds`` until cancelled."""
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.reload_async()
            except BackendUnavailableError as exc:
                # Keep serving the last good snapshot; /ready reports the failure.
                log.warning("registry refresh failed: %s", exc.message)
