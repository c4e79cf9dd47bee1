"""What the Airflow DAGs share: where the store is, read from params, a connection or the env.

Imported inside tasks only (it pulls in Feast through :mod:`pipelines.config`), so parsing
a DAG file stays cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pipelines.config import StoreConfig, resolve_config

log = logging.getLogger(__name__)

DEFAULT_CONNECTION = "featurestore_default"


def connection_extra(conn_id: str | None) -> dict[str, Any]:
    """The extras of Airflow connection ``conn_id`` (``{}`` when it is not defined).

    A ``generic`` connection whose extra JSON holds ``repo_path``, ``registry_url`` and
    ``redis_url``; Airflow also reads it from ``AIRFLOW_CONN_<ID>`` or a secrets backend,
    so passwords in the URLs stay out of DAG params.
    """
    if not conn_id:
        return {}
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        log.info("no Airflow connection %r; using params and FEATURESTORE_* variables", conn_id)
        return {}
    extra = connection.extra_dejson
    return dict(extra) if isinstance(extra, Mapping) else {}


def config_from_params(params: Mapping[str, Any]) -> StoreConfig:
    """The store for this run: params first, then the connection, then the environment."""
    explicit = {key: params.get(key) for key in ("repo_path", "registry_url", "redis_url")}
    conn_id = params.get("connection_id", DEFAULT_CONNECTION)
    return resolve_config(explicit, connection_extra(conn_id))
