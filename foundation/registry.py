"""Feast's SQL registry, with snapshots that say which content they hold.

Feast memoizes its registry lookups (``feast.infra.registry.proto_registry_utils``)
under the key ``(id(snapshot), snapshot.version_id, project)``. Its file registry
writes a fresh ``version_id`` with every change; its SQL registry leaves it
empty. CPython reuses the address of a freed object, so a snapshot
taken after a ``feast apply`` can get the ``id`` of an older, freed one and be
answered from the older one's memo: the old views, sources and TTLs, until the
registry changes again. Measured: 15 of 59 applies read back stale in one
process that refreshed between them.

:class:`VersionedSqlRegistry` stamps each snapshot with a digest of its content,
so equal content shares a version (memos stay valid, nothing is rebuilt) and
changed content never matches an older memo (an empty registry stays unstamped:
Feast reads an empty snapshot as "not loaded yet"). :class:`FeatureStore` is Feast's
store using it for ``registry_type: sql``; every store this project opens is one.
"""

from __future__ import annotations

import hashlib

import feast
from feast.infra.registry.base_registry import BaseRegistry
from feast.infra.registry.sql import SqlRegistry
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto


class VersionedSqlRegistry(SqlRegistry):
    """Feast's SQL registry whose snapshots carry a digest of their content as ``version_id``."""

    def proto(self) -> RegistryProto:
        snapshot = super().proto()  # its version_id is empty
        if snapshot == RegistryProto():
            # Feast reads an empty snapshot as "not loaded yet" and reloads it; keep it so.
            return snapshot
        content = snapshot.SerializeToString(deterministic=True)
        snapshot.version_id = hashlib.blake2b(content, digest_size=16).hexdigest()
        return snapshot


class FeatureStore(feast.FeatureStore):
    """Feast's ``FeatureStore``; a SQL registry is a :class:`VersionedSqlRegistry`."""

    def _create_registry(self) -> BaseRegistry:
        registry = self.config.registry
        if registry.registry_type == "sql":
            return VersionedSqlRegistry(registry, self.config.project, None)
        return super()._create_registry()


def stored_feature_views(store: feast.FeatureStore) -> list[feast.FeatureView]:
    """The store's feature views over a batch source, stream feature views included.

    Feast lists the two kinds apart, but materializes, serves, pushes to and joins a
    ``StreamFeatureView`` (a ``FeatureView`` subclass) like a batch one.
    """
    return [*store.list_feature_views(), *store.list_stream_feature_views()]
