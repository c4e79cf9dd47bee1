"""Request and response models of the HTTP API (Feast's JSON where Feast has one).

Field names and shapes follow ``feast serve`` at the pinned version
(``feast/feature_server.py``) so existing Feast HTTP clients work unchanged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_ONLINE_EXAMPLE: dict[str, Any] = {
    "entities": {"driver_id": [1001, 1002]},
    "features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"],
    "full_feature_names": False,
}


class GetOnlineFeaturesRequest(BaseModel):
    """``POST /get-online-features`` body, as ``feast serve`` takes it."""

    model_config = ConfigDict(json_schema_extra={"examples": [_ONLINE_EXAMPLE]})

    entities: dict[str, list[Any]] = Field(
        description="Join key (and request data) name -> one value per entity row."
    )
    features: list[str] = Field(default_factory=list, description='Feature refs "view:feature".')
    feature_service: str | None = Field(
        default=None, description="A feature service name, instead of `features`."
    )
    full_feature_names: bool = Field(
        default=False, description='Name columns "view__feature" instead of "feature".'
    )
    include_feature_view_version_metadata: bool = False


class FeatureVector(BaseModel):
    """One column of the response: entry j belongs to entity row j."""

    values: list[Any]
    statuses: list[Literal["PRESENT", "NULL_VALUE", "NOT_FOUND", "OUTSIDE_MAX_AGE", "INVALID"]]
    event_timestamps: list[str]


class OnlineFeaturesMetadata(BaseModel):
    feature_names: list[str]


class OnlineFeaturesResponse(BaseModel):
    """Column-oriented, like ``feast serve``: index ``results`` via ``feature_names``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "metadata": {"feature_names": ["driver_id", "conv_rate", "avg_daily_trips"]},
                    "results": [
                        {
                            "values": [1001, 1002],
                            "statuses": ["PRESENT", "PRESENT"],
                            "event_timestamps": ["1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"],
                        },
                        {
                            "values": [0.53, None],
                            "statuses": ["PRESENT", "NOT_FOUND"],
                            "event_timestamps": ["2026-11-26T09:00:00Z", "1970-01-01T00:00:00Z"],
                        },
                        {
                            "values": [412, None],
                            "statuses": ["PRESENT", "NOT_FOUND"],
                            "event_timestamps": ["2026-11-26T09:00:00Z", "1970-01-01T00:00:00Z"],
                        },
                    ],
                }
            ]
        }
    )

    metadata: OnlineFeaturesMetadata
    results: list[FeatureVector]


PushTarget = Literal["online", "offline", "online_and_offline"]


class PushRequest(BaseModel):
    """``POST /push`` body, as ``feast serve`` takes it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "push_source_name": "driver_stats_push",
                    "df": {
                        "driver_id": [1001],
                        "event_timestamp": ["2026-11-26T10:00:00Z"],
                        "created": ["2026-11-26T10:00:01Z"],
                        "conv_rate": [0.61],
                        "acc_rate": [0.9],
                        "avg_daily_trips": [17],
                        "avg_rating": [4.8],
                        "surge_multiplier": [1.2],
                        "is_active": [True],
                    },
                    "to": "online_and_offline",
                }
            ]
        }
    )

    push_source_name: str
    df: dict[str, list[Any]] = Field(description="Column name -> values, one per row.")
    to: PushTarget = "online"
    allow_registry_cache: bool = True
    transform_on_write: bool = True


class WriteToOnlineStoreRequest(BaseModel):
    """``POST /write-to-online-store`` body, as ``feast serve`` takes it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "feature_view_name": "customer_profile",
                    "df": {
                        "customer_id": ["c_000042"],
                        "event_timestamp": ["2026-11-26T10:00:00Z"],
                        "current_balance": [12.5],
                        "lifetime_trip_count": [88],
                        "avg_passenger_rating": [4.9],
                        "membership_tier": ["gold"],
                        "signup_ts": ["2024-03-01T00:00:00Z"],
                        "favourite_zones": [["airport", "downtown"]],
                    },
                }
            ]
        }
    )

    feature_view_name: str
    df: dict[str, list[Any]]
    allow_registry_cache: bool = True
    transform_on_write: bool = True


class OnlineDeleteRequest(BaseModel):
    """``DELETE /online/{feature_view}`` body: some entities, or every row."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"entities": {"driver_id": [1001]}}]}
    )

    entities: dict[str, list[Any]] | None = Field(
        default=None, description="Join key -> values, one per entity row to delete."
    )
    all_rows: bool = Field(default=False, description="Delete every row of the view.")


class OnlineDeleteResponse(BaseModel):
    """What a delete removed."""

    status: Literal["ok"] = "ok"
    feature_view: str
    deleted: int = Field(description="Entities (hashes) that held a row of the view.")


class WriteResponse(BaseModel):
    """What a successful write did."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "ok", "rows": 1, "written": 1, "skipped_older": 0,
                 "offline_written": 1, "feature_views": ["driver_hourly_stats"],
                 "to": "online_and_offline"}
            ]
        }
    )  # fmt: skip

    status: Literal["ok"] = "ok"
    rows: int = Field(description="Rows accepted (the request's rows).")
    written: int = Field(
        description="Rows stored, summed over the target views: in the online store when "
        "the target includes it, else appended offline."
    )
    skipped_older: int = Field(
        description="Rows not stored online because the stored row (or another row for "
        "the same entity in the request) is as new or newer, summed over the views."
    )
    offline_written: int = Field(
        description="Rows appended to the offline store, summed over the views (0 when "
        "the target is online only)."
    )
    feature_views: list[str]
    to: PushTarget


class MaterializeRequest(BaseModel):
    """``POST /materialize`` body, as ``feast serve`` takes it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "start_ts": "2026-11-20T00:00:00Z",
                    "end_ts": "2026-11-26T00:00:00Z",
                    "feature_views": ["driver_hourly_stats"],
                }
            ]
        }
    )

    start_ts: str | None = None
    end_ts: str | None = None
    feature_views: list[str] | None = None
    disable_event_timestamp: bool = False
    full_feature_names: bool = False


class MaterializeIncrementalRequest(BaseModel):
    """``POST /materialize-incremental`` body, as ``feast serve`` takes it."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"end_ts": "2026-11-26T00:00:00Z", "feature_views": None}]}
    )

    end_ts: str
    feature_views: list[str] | None = None
    full_feature_names: bool = False


JobState = Literal["pending", "running", "succeeded", "failed"]


class ViewProgress(BaseModel):
    rows_done: int = 0
    rows_total: int | None = None
    finished: bool = False


class MaterializeJob(BaseModel):
    """A background materialization and how far it got."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": "3f0c2f3e8f3b4d3c9f1f8f2b6d7c1a20",
                    "status": "accepted",
                    "kind": "materialize",
                    "state": "running",
                    "feature_views": ["driver_hourly_stats"],
                    "start_ts": "2026-11-20T00:00:00Z",
                    "end_ts": "2026-11-26T00:00:00Z",
                    "progress": {
                        "driver_hourly_stats": {
                            "rows_done": 5000,
                            "rows_total": 20000,
                            "finished": False,
                        }
                    },
                    "error": None,
                    "created_at": "2026-11-26T10:00:00Z",
                    "finished_at": None,
                }
            ]
        }
    )

    job_id: str
    status: Literal["accepted"] = Field(
        default="accepted", description="As `feast serve --async` answers."
    )
    kind: Literal["materialize", "materialize-incremental"]
    state: JobState
    feature_views: list[str]
    start_ts: datetime | None
    end_ts: datetime
    progress: dict[str, ViewProgress]
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class StrangerReadyResponse(BaseModel):
    """``/ready`` for callers without a key: ready or not, no backend details."""

    status: Literal["ready"]


class ReadyResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "ready", "redis": "ok", "registry": "ok", "registry_age_seconds": 1.2}
            ]
        }
    )

    status: Literal["ready", "unavailable"]
    redis: str
    registry: str
    registry_age_seconds: float | None


class ErrorBody(BaseModel):
    type: str = Field(description="Machine-readable error class, e.g. `feature_view_not_found`.")
    message: str = Field(description="What failed, which object, and how to fix it.")

    model_config = ConfigDict(extra="allow")


class ErrorResponse(BaseModel):
    """Every error: ``{"error": {"type", "message", ...details}}``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "type": "feature_view_not_found",
                        "message": "feature view 'driver_stats' not in project 'rides'; known "
                        "views: [...]; run `feast apply` in the repo if it is new",
                        "feature_view": "driver_stats",
                    }
                }
            ]
        }
    )

    error: ErrorBody


class CreateApiKeyRequest(BaseModel):
    """Body of ``POST /keys``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"scope": "read", "name": "ranking-service"}]},
    )
    scope: Literal["read", "write", "admin"]
    name: str = Field(default="", max_length=200)


class ApiKeyCreated(BaseModel):
    """A new key: store ``key`` now, it is never shown again."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "key": "fsk_1a2b3c4d5e6f_<secret>",
                    "key_id": "1a2b3c4d5e6f",
                    "scope": "read",
                    "name": "",
                }
            ]
        }
    )
    key: str
    key_id: str
    scope: str
    name: str


class ApiKeyInfo(BaseModel):
    """A listed key, without its secret."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "key_id": "1a2b3c4d5e6f",
                    "scope": "read",
                    "name": "ranking-service",
                    "created_at": "2026-11-26T10:00:00Z",
                    "revoked": False,
                }
            ]
        }
    )
    key_id: str
    scope: str
    name: str
    created_at: datetime
    revoked: bool
