"""The admin API for model aliases (admins only, ``credentials.is_alias_admin``).

``GET /v1/aliases`` lists them, ``GET|PUT|DELETE /v1/aliases/{alias}`` reads, writes
(``{"models": [...]}`` in fallback order) and removes one. Writes go to etcd
(``aliases.Aliases``), from where every replica's watch picks them up; this replica answers
with the new state at once. Objects: ``{"object": "model.alias", "id", "models"}``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from nexus_kit import NotFoundError
from nexus_kit.responses import JSONResponse

from .aliases import Aliases, alias_object, check_name, parse_models

router = APIRouter()


def _aliases(request: Request) -> Aliases:
    aliases: Aliases = request.app.state.gateway.aliases
    return aliases


def _missing(alias: str) -> NotFoundError:
    return NotFoundError(f"No alias named {alias[:64]!r}.", param="alias", code="alias_not_found")


@router.get("/v1/aliases", operation_id="gateway.aliases.list", summary="Model aliases")
async def list_aliases(request: Request) -> JSONResponse:
    table = _aliases(request).table
    data = [alias_object(a, m) for a, m in sorted(table.items())]
    return JSONResponse({"object": "list", "data": data})


@router.get("/v1/aliases/{alias}", operation_id="gateway.aliases.get", summary="One alias")
async def get_alias(alias: str, request: Request) -> JSONResponse:
    models = _aliases(request).get(check_name(alias))
    if models is None:
        raise _missing(alias)
    return JSONResponse(alias_object(alias, models))


@router.put("/v1/aliases/{alias}", operation_id="gateway.aliases.put", summary="Set an alias")
async def put_alias(alias: str, request: Request) -> JSONResponse:
    models = parse_models(await request.body(), check_name(alias))
    await _aliases(request).put(alias, models)
    return JSONResponse(alias_object(alias, models))


@router.delete("/v1/aliases/{alias}", operation_id="gateway.aliases.delete", summary="Remove")
async def delete_alias(alias: str, request: Request) -> JSONResponse:
    if not await _aliases(request).delete(check_name(alias)):
        raise _missing(alias)
    return JSONResponse({"object": "model.alias.deleted", "id": alias, "deleted": True})
