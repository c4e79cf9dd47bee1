"""The backends the CLI and the demo use when none are configured.

``featurestore serve`` and ``featurestore demo`` run against the registry and Redis the
environment names (:mod:`foundation.environment`); when no Redis is configured anywhere
(neither ``FEATURESTORE_REDIS_URL`` nor the repo's ``online_store.connection_string``)
they start an embedded ``redis-server`` whose data lives under the repo's ``data/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from foundation.environment import (
    REDIS_ENV,
    REGISTRY_ENV,
    configured_redis,
    data_dir,
    default_registry_url,
)
from online_store.embedded import EmbeddedRedis


@contextmanager
def backends(repo: Path) -> Iterator[dict[str, str]]:
    """Set the registry URL (and an embedded Redis's URL) for this process and its children.

    Starts the embedded Redis only when no Redis is configured (see
    :func:`foundation.environment.configured_redis`) and stops it (data kept on disk) on
    exit. A repo naming its own Redis is left to use it: nothing is started or written
    under ``data/redis``.

    Yields:
        The registry URL and the Redis the service will use.
    """
    os.environ.setdefault(REGISTRY_ENV, default_registry_url(repo))
    data_dir(repo).mkdir(parents=True, exist_ok=True)
    embedded: EmbeddedRedis | None = None
    redis_target = configured_redis(repo)
    if redis_target is None:
        embedded = EmbeddedRedis(data_dir(repo) / "redis")
        redis_target = os.environ[REDIS_ENV] = embedded.start()
    try:
        yield {REGISTRY_ENV: os.environ[REGISTRY_ENV], REDIS_ENV: redis_target}
    finally:
        if embedded is not None:
            embedded.stop()
            del os.environ[REDIS_ENV]
