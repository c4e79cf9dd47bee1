"""``DELETE /online/{feature_view}``: remove a view's online rows (admin scope).

The repair for a pinned key: a stored row is only ever replaced by a newer one, so a row
stamped in the future keeps its value until then. Deleting it lets the next write land.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from feast.feature_view import DUMMY_ENTITY_ID, DUMMY_ENTITY_VAL

from foundation.errors import InvalidRequestError, RequestTooLargeError
from online_store.deletes import delete_all, delete_entities
from service.deps import SettingsDep, SnapshotDep, StateDep
from service.schemas import ErrorResponse, OnlineDeleteRequest, OnlineDeleteResponse

router = APIRouter(tags=["writes"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (404, 413, 422, 503)
}


@router.delete(
    "/online/{feature_view}",
    summary="Delete a feature view's online rows (some entities, or all)",
    responses=_ERRORS,
)
async def delete_online_rows(
    feature_view: str,
    body: OnlineDeleteRequest,
    state: StateDep,
    snapshot: SnapshotDep,
    settings: SettingsDep,
) -> OnlineDeleteResponse:
    """Delete the view's rows for ``entities``, or every row with ``all_rows: true``.

    Other views stored under the same entities keep their values. The next write for a
    deleted entity lands whatever its event time (within the clock rule).
    """
    info = snapshot.view(feature_view)
    if (body.entities is None) == (not body.all_rows):
        raise InvalidRequestError(
            'give either "entities" (join key -> values) or "all_rows": true, not both',
            feature_view=feature_view,
        )
    features = list(info.features)
    if body.all_rows:
        deleted = await asyncio.to_thread(
            delete_all,
            state.redis_sync,
            project=snapshot.project,
            view=info.name,
            join_keys=info.join_keys,
            features=features,
        )
        return OnlineDeleteResponse(feature_view=info.name, deleted=deleted)
    entities = dict(body.entities or {})
    rows = max((len(v) for v in entities.values()), default=0)
    if rows > settings.max_entities_per_request:
        raise RequestTooLargeError(
            f"{rows} entity rows in one delete; the limit is "
            f"{settings.max_entities_per_request} (FEATURESTORE_MAX_ENTITIES_PER_REQUEST)",
            limit=settings.max_entities_per_request,
        )
    if DUMMY_ENTITY_ID in info.join_keys:
        entities[DUMMY_ENTITY_ID] = [DUMMY_ENTITY_VAL]
    deleted = await asyncio.to_thread(
        delete_entities,
        state.redis_sync,
        project=snapshot.project,
        view=info.name,
        join_keys=info.join_keys,
        join_key_types=info.join_key_types,
        features=features,
        entities={k: v for k, v in entities.items() if k in info.join_keys},
    )
    return OnlineDeleteResponse(feature_view=info.name, deleted=deleted)
