"""Registry browsing: entities, feature views, on-demand views, feature services.

Served from the background-refreshed snapshot, so browsing never queries the
registry database per request.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from foundation.errors import FeatureViewNotFoundError
from service.deps import SnapshotDep
from service.registry_views import (
    DataSourceOut,
    EntityOut,
    FeatureServiceOut,
    FeatureViewOut,
    OnDemandFeatureViewOut,
    ProjectOut,
    data_sources_out,
    entity_out,
    feature_service_out,
    feature_view_out,
    on_demand_view_out,
)
from service.schemas import ErrorResponse

router = APIRouter(prefix="/registry", tags=["registry"])
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}


@router.get("/projects", summary="The project served, with object counts")
async def list_projects(snapshot: SnapshotDep) -> list[ProjectOut]:
    """The one project this service serves (a list, as a registry may hold several)."""
    return [
        ProjectOut(
            name=snapshot.project,
            entities=len(snapshot.entities),
            feature_views=len(snapshot.views),
            on_demand_feature_views=len(snapshot.on_demand_views),
            feature_services=len(snapshot.feature_services),
            data_sources=len(data_sources_out(list(snapshot.views.values()))),
        )
    ]


@router.get("/data-sources", summary="List data sources and the views that read them")
async def list_data_sources(snapshot: SnapshotDep) -> list[DataSourceOut]:
    """Every batch and stream source of the project's feature views."""
    return data_sources_out(list(snapshot.views.values()))


@router.get("/entities", summary="List entities")
async def list_entities(snapshot: SnapshotDep) -> list[EntityOut]:
    """Every entity of the project, by name."""
    return [entity_out(e) for _, e in sorted(snapshot.entities.items())]


@router.get("/entities/{name}", summary="One entity", responses=_404)
async def get_entity(name: str, snapshot: SnapshotDep) -> EntityOut:
    """The entity ``name``."""
    return entity_out(snapshot.entity(name))


@router.get("/feature-views", summary="List batch feature views")
async def list_feature_views(snapshot: SnapshotDep) -> list[FeatureViewOut]:
    """Schema, TTL, tags and materialized intervals of every batch feature view."""
    return [feature_view_out(v) for _, v in sorted(snapshot.views.items())]


@router.get("/feature-views/{name}", summary="One batch feature view", responses=_404)
async def get_feature_view(name: str, snapshot: SnapshotDep) -> FeatureViewOut:
    """The feature view ``name``."""
    return feature_view_out(snapshot.view(name))


@router.get("/on-demand-feature-views", summary="List on-demand feature views")
async def list_on_demand_feature_views(snapshot: SnapshotDep) -> list[OnDemandFeatureViewOut]:
    """Sources, request schema and outputs of every on-demand feature view."""
    return [on_demand_view_out(v) for _, v in sorted(snapshot.on_demand_views.items())]


@router.get("/on-demand-feature-views/{name}", summary="One on-demand feature view", responses=_404)
async def get_on_demand_feature_view(name: str, snapshot: SnapshotDep) -> OnDemandFeatureViewOut:
    """The on-demand feature view ``name``."""
    view = snapshot.on_demand_views.get(name)
    if view is None:
        raise FeatureViewNotFoundError(
            f"on-demand feature view {name!r} not in project {snapshot.project!r}; known: "
            f"{sorted(snapshot.on_demand_views)}",
            feature_view=name,
        )
    return on_demand_view_out(view)


@router.get("/feature-services", summary="List feature services")
async def list_feature_services(snapshot: SnapshotDep) -> list[FeatureServiceOut]:
    """Every feature service and the features it bundles."""
    return [feature_service_out(s) for _, s in sorted(snapshot.feature_services.items())]


@router.get("/feature-services/{name}", summary="One feature service", responses=_404)
async def get_feature_service(name: str, snapshot: SnapshotDep) -> FeatureServiceOut:
    """The feature service ``name``."""
    return feature_service_out(snapshot.feature_service(name))
