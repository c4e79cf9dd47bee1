"""API key management over HTTP (admin scope): create, list, revoke."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response

from service.auth import KeyStore, Scope
from service.deps import StateDep
from service.schemas import ApiKeyCreated, ApiKeyInfo, CreateApiKeyRequest, ErrorResponse

router = APIRouter(prefix="/keys", tags=["api keys"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 403, 422, 503)
}


def _store(state: StateDep) -> KeyStore:
    # The app mounts this router only when auth is on, so an authenticator exists.
    assert state.auth is not None
    return state.auth.store


@router.post("", status_code=201, summary="Create an API key", responses=_ERRORS)
async def create_key(body: CreateApiKeyRequest, state: StateDep) -> ApiKeyCreated:
    """Create a key; the response is the only place its secret ever appears."""
    scope = Scope.parse(body.scope)
    key = await asyncio.to_thread(_store(state).create, scope, name=body.name)
    return ApiKeyCreated(key=key, key_id=key.split("_")[1], scope=body.scope, name=body.name)


@router.get("", summary="List API keys (never their secrets)", responses=_ERRORS)
async def list_keys(state: StateDep) -> list[ApiKeyInfo]:
    infos = await asyncio.to_thread(_store(state).list)
    return [
        ApiKeyInfo(
            key_id=i.key_id,
            scope=i.scope.name.lower(),
            name=i.name,
            created_at=i.created_at,
            revoked=i.revoked,
        )
        for i in infos
    ]


@router.delete(
    "/{key_id}",
    status_code=204,
    summary="Revoke an API key",
    responses={**_ERRORS, 404: {"model": ErrorResponse}},
)
async def revoke_key(key_id: str, state: StateDep) -> Response:
    await asyncio.to_thread(_store(state).revoke, key_id)
    return Response(status_code=204)
