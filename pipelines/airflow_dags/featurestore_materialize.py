"""Keep the online store fresh: materialize every online feature view, then check freshness.

One mapped task per online feature view (the list is read from the registry by the first
task at run time, so parsing this file imports nothing but Airflow), each running Feast's
``materialize-incremental`` with the repo's engine. Reruns are idempotent: Feast starts at the
view's last recorded end and our engine never replaces a newer row in Redis. The last task
fails the run when a view's newest materialized event is older than its threshold (its TTL
by default, ``freshness_thresholds`` per view to override), without retries: waiting does not
make data fresher.

The store comes from the params, else the ``featurestore_default`` connection's extras, else
``FEATURESTORE_REPO_PATH`` / ``FEATURESTORE_REGISTRY_URL`` / ``FEATURESTORE_REDIS_URL``. The
schedule is ``FEATURESTORE_MATERIALIZE_SCHEDULE`` (cron or preset, default ``@hourly``).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

DAG_ID = "featurestore_materialize"
SCHEDULE = os.environ.get("FEATURESTORE_MATERIALIZE_SCHEDULE", "@hourly")
# Unlimited-TTL views (rider profiles, written weekly) need some limit to be checked against.
DEFAULT_MAX_AGE_SECONDS = 8 * 86_400


@dag(
    dag_id=DAG_ID,
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 3,
        "retry_delay": timedelta(seconds=20),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    },
    params={
        "repo_path": Param(None, type=["null", "string"], description="Feast repo directory"),
        "registry_url": Param(None, type=["null", "string"], description="SQL registry URL"),
        "redis_url": Param(None, type=["null", "string"], description="online store Redis"),
        "connection_id": Param(
            "featurestore_default", type=["null", "string"], description="connection with them"
        ),
        "freshness_thresholds": Param(
            {}, type="object", description="max age in seconds per feature view"
        ),
        "default_max_age_seconds": Param(
            DEFAULT_MAX_AGE_SECONDS,
            type="number",
            exclusiveMinimum=0,
            description="limit for views without a TTL",
        ),
    },
    tags=["featurestore", "materialization"],
    doc_md=__doc__,
)
def featurestore_materialize() -> None:
    @task
    def feature_views() -> list[str]:
        from pipelines.airflow_support import config_from_params
        from pipelines.materialize import online_feature_views

        return online_feature_views(config_from_params(get_current_context()["params"]))

    @task(map_index_template="{{ task.op_kwargs['feature_view'] }}")
    def materialize(feature_view: str) -> dict[str, Any]:
        from pipelines.airflow_support import config_from_params
        from pipelines.materialize import materialize_view

        context = get_current_context()
        interval_end = context.get("data_interval_end")
        now = datetime.now(UTC)
        end = min(interval_end, now) if interval_end is not None else now
        return materialize_view(config_from_params(context["params"]), feature_view, end)

    @task(retries=0)
    def check_freshness(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from pipelines.airflow_support import config_from_params
        from pipelines.materialize import StaleFeaturesError, check_freshness, view_thresholds

        params = get_current_context()["params"]
        config = config_from_params(params)
        limits = view_thresholds(
            config, params["freshness_thresholds"], params["default_max_age_seconds"]
        )
        try:
            return [r.to_dict() for r in check_freshness(config, limits)]
        except StaleFeaturesError as exc:
            raise AirflowFailException(exc.message) from exc

    check_freshness(materialize.expand(feature_view=feature_views()))


materialize_dag = featurestore_materialize()
