"""Registry objects as JSON models for the browsing endpoints."""

from __future__ import annotations

from datetime import datetime

from feast import Entity, FeatureService, OnDemandFeatureView
from feast.data_source import DataSource, PushSource
from pydantic import BaseModel, ConfigDict, Field

from service.catalog import ViewInfo


class Column(BaseModel):
    name: str
    dtype: str


class EntityOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "driver", "join_key": "driver_id", "value_type": "INT64",
                 "description": "A driver on the platform.", "tags": {}, "owner": ""}
            ]
        }
    )  # fmt: skip

    name: str
    join_key: str
    value_type: str
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    owner: str = ""


class Interval(BaseModel):
    start: datetime
    end: datetime


class FeatureViewOut(BaseModel):
    """A batch feature view."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "driver_hourly_stats", "entities": ["driver"],
                    "join_keys": [{"name": "driver_id", "dtype": "Int64"}],
                    "features": [{"name": "conv_rate", "dtype": "Float32"},
                                 {"name": "avg_daily_trips", "dtype": "Int64"}],
                    "ttl_seconds": 86400, "online": True, "source": "driver_stats_source",
                    "push_source": "driver_stats_push", "tags": {"team": "marketplace"},
                    "description": "", "owner": "",
                    "materialized_intervals": [
                        {"start": "2026-11-01T00:00:00Z", "end": "2026-11-26T00:00:00Z"}
                    ],
                }
            ]
        }
    )  # fmt: skip

    name: str
    entities: list[str]
    join_keys: list[Column]
    features: list[Column]
    ttl_seconds: int | float = Field(
        description="0 = values never expire; a fraction when the TTL is not whole seconds."
    )
    online: bool
    source: str | None
    push_source: str | None
    tags: dict[str, str]
    description: str
    owner: str
    materialized_intervals: list[Interval]


class OnDemandFeatureViewOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "fare_estimate", "mode": "pandas",
                 "source_feature_views": ["driver_hourly_stats"],
                 "request_schema": [{"name": "distance_km", "dtype": "DOUBLE"}],
                 "features": [{"name": "estimated_fare", "dtype": "Float64"}],
                 "tags": {}, "description": ""}
            ]
        }
    )  # fmt: skip

    name: str
    mode: str
    source_feature_views: list[str]
    request_schema: list[Column]
    features: list[Column]
    tags: dict[str, str]
    description: str


class ServiceProjection(BaseModel):
    feature_view: str
    features: list[str]


class FeatureServiceOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "ride_ranking_v1",
                 "features": [{"feature_view": "driver_hourly_stats",
                               "features": ["conv_rate", "acc_rate"]},
                              {"feature_view": "fare_estimate", "features": ["estimated_fare"]}],
                 "tags": {"model": "ride_ranking"}, "description": "", "owner": ""}
            ]
        }
    )  # fmt: skip

    name: str
    features: list[ServiceProjection]
    tags: dict[str, str]
    description: str
    owner: str


def entity_out(entity: Entity) -> EntityOut:
    """JSON view of an entity."""
    return EntityOut(
        name=entity.name,
        join_key=entity.join_key,
        value_type=entity.value_type.name,
        description=entity.description or "",
        tags=dict(entity.tags or {}),
        owner=entity.owner or "",
    )


def feature_view_out(info: ViewInfo) -> FeatureViewOut:
    """JSON view of a batch feature view (schema, TTL, tags, materialized intervals)."""
    view = info.view
    stream = view.stream_source
    return FeatureViewOut(
        name=view.name,
        entities=list(view.entities),
        join_keys=[Column(name=c.name, dtype=str(c.dtype)) for c in view.entity_columns],
        features=[Column(name=f.name, dtype=f.dtype) for f in info.features.values()],
        ttl_seconds=info.ttl_seconds,
        online=view.online,
        source=view.batch_source.name if view.batch_source is not None else None,
        push_source=stream.name if isinstance(stream, PushSource) else None,
        tags=dict(view.tags or {}),
        description=view.description or "",
        owner=view.owner or "",
        materialized_intervals=[
            Interval(start=start, end=end) for start, end in view.materialization_intervals
        ],
    )


def on_demand_view_out(view: OnDemandFeatureView) -> OnDemandFeatureViewOut:
    """JSON view of an on-demand feature view."""
    return OnDemandFeatureViewOut(
        name=view.name,
        mode=str(view.mode),
        source_feature_views=list(view.source_feature_view_projections),
        request_schema=[
            Column(name=name, dtype=vt.name) for name, vt in view.get_request_data_schema().items()
        ],
        features=[Column(name=f.name, dtype=str(f.dtype)) for f in view.features],
        tags=dict(view.tags or {}),
        description=view.description or "",
    )


def feature_service_out(service: FeatureService) -> FeatureServiceOut:
    """JSON view of a feature service."""
    return FeatureServiceOut(
        name=service.name,
        features=[
            ServiceProjection(
                feature_view=p.name_alias or p.name, features=[f.name for f in p.features]
            )
            for p in service.feature_view_projections
        ],
        tags=dict(service.tags or {}),
        description=service.description or "",
        owner=service.owner or "",
    )


class DataSourceOut(BaseModel):
    """A data source, its definition, and the views that read it."""

    name: str
    kind: str
    timestamp_field: str
    created_timestamp_column: str
    field_mapping: dict[str, str]
    path: str | None = Field(description="File sources: the Parquet path or glob.")
    description: str
    tags: dict[str, str]
    owner: str
    used_by: list[str] = Field(description="Feature views reading this source.")


class ProjectOut(BaseModel):
    """The project the service serves, with object counts."""

    name: str
    entities: int
    feature_views: int
    on_demand_feature_views: int
    feature_services: int
    data_sources: int


def data_sources_out(views: list[ViewInfo]) -> list[DataSourceOut]:
    """Every batch and stream source used by ``views``, by name, with where it is used."""
    sources: dict[str, DataSource] = {}
    used_by: dict[str, list[str]] = {}
    for info in views:
        for source in (info.view.batch_source, info.view.stream_source):
            if source is None or not source.name:
                continue
            sources.setdefault(source.name, source)
            used_by.setdefault(source.name, []).append(info.view.name)
    return [
        DataSourceOut(
            name=name,
            kind=type(source).__name__,
            timestamp_field=source.timestamp_field or "",
            created_timestamp_column=source.created_timestamp_column or "",
            field_mapping=dict(source.field_mapping or {}),
            path=getattr(source, "path", None),
            description=source.description or "",
            tags=dict(source.tags or {}),
            owner=source.owner or "",
            used_by=sorted(set(used_by[name])),
        )
        for name, source in sorted(sources.items())
    ]
