"""The backends the CLI and the demo use when none are configured.

``featurestore serve`` and ``featurestore demo`` run against the registry and Redis the
environment names (:mod:`foundation.environment`); when ``FEATURESTORE_REDIS_URL`` is
unset they start an embedded ``redis-server`` whose data lives under the repo's ``data/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from foundation.environment import REDIS_ENV, REGISTRY_ENV, data_dir, default_registry_url
from online_store.embedded import EmbeddedRedis


@contextmanager
def backends(repo: Path) -> Iterator[dict[str, str]]:
    """Set both URLs in ``os.environ`` for this process and its children.

    Starts the embedded Redis when ``FEATURESTORE_REDIS_URL`` is unset and stops it
    (data kept on disk) on exit.

    Yields:
        The environment variables that were set.
    """
    os.environ.setdefault(REGISTRY_ENV, default_registry_url(repo))
    data_dir(repo).mkdir(parents=True, exist_ok=True)
    embedded: EmbeddedRedis | None = None
    if not os.environ.get(REDIS_ENV):
        embedded = EmbeddedRedis(data_dir(repo) / "redis")
        os.environ[REDIS_ENV] = embedded.start()
    try:
        yield {REGISTRY_ENV: os.environ[REGISTRY_ENV], REDIS_ENV: os.environ[REDIS_ENV]}
    finally:
        if embedded is not None:
            embedded.stop()
            del os.environ[REDIS_ENV]
