"""The gateway's own endpoints: the model list and the admin views of routes and services.

Everything else is proxied (``proxy.Proxy`` is the router's fallback). These read the
current routing table and upstream state; they never wait on etcd or an upstream.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from nexus_kit import ModelInfo, endpoint_flags
from nexus_kit.responses import JSONResponse

from . import catalog
from .discovery import Instance
from .routing import Route, RoutingTable
from .state import GatewayState
from .upstreams import Upstreams

router = APIRouter()


def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


@router.get("/v1/models", operation_id="models.list", summary="Models of every ready instance")
async def list_models(request: Request) -> JSONResponse:
    return JSONResponse(models_document(_state(request)))


# ``:path`` because model ids may hold slashes (``hf.co/org/model:Q4``); a converter is not a
# valid metadata path, so the route stays out of the schema (and of /v1/metadata).
@router.get("/v1/models/{model:path}", operation_id="models.retrieve", include_in_schema=False)
async def retrieve_model(model: str, request: Request) -> JSONResponse:
    state = _state(request)
    for info, instance in ready_models(state):
        if info.id == model:
            return JSONResponse(_model_object(info, instance))
    return JSONResponse(catalog.retrieve(state, model))  # any name routing accepts, aliases too


@router.get("/v1/routes", operation_id="gateway.routes", summary="The routing table")
async def list_routes(request: Request) -> JSONResponse:
    return JSONResponse(routes_document(_state(request)))


@router.get("/v1/services", operation_id="gateway.services", summary="Discovered instances")
async def list_services(request: Request) -> JSONResponse:
    return JSONResponse(services_document(_state(request)))


@router.get(
    "/v1/services/events", operation_id="gateway.services.events",
    summary="Live feed of discovery changes (SSE)", openapi_extra=endpoint_flags(streaming=True),
)  # fmt: skip
async def service_events(request: Request) -> StreamingResponse:
    state = _state(request)
    drainer = request.app.state.kit.drainer

    def document() -> dict[str, Any]:
        return {
            "object": "nexus.snapshot",
            "revision": state.table.revision,
            "synced": state.table.snapshot.synced,
            "services": services_document(state),
            "routes": routes_document(state),
            "models": models_document(state),
        }

    return StreamingResponse(
        state.events.stream(document, lambda: drainer.draining),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# -- documents --------------------------------------------------------------------------


def models_document(state: GatewayState) -> dict[str, Any]:
    data = [_model_object(m, i) for m, i in ready_models(state)]
    data += catalog.alias_models(state, {m["id"] for m in data})
    return {"object": "list", "data": data}


def routes_document(state: GatewayState) -> dict[str, Any]:
    table = state.table
    return {
        "object": "list",
        "revision": table.revision,
        "synced": table.snapshot.synced,
        "data": [_route_doc(r, state.upstreams) for r in table.routes],
        "models": _model_provenance(table, state.upstreams),
    }


def services_document(state: GatewayState) -> dict[str, Any]:
    snapshot = state.table.snapshot
    services: dict[str, list[dict[str, Any]]] = {}
    for instance in snapshot.instances:
        services.setdefault(instance.service, []).append(_instance_doc(instance, state.upstreams))
    d = state.discovery
    return {
        "object": "list",
        "revision": snapshot.revision,
        "synced": snapshot.synced,
        "etcd": {
            "endpoints": state.settings.etcd_endpoint_list,
            "connected": bool(state.settings.etcd_endpoint_list) and d.etcd_error is None,
            "error": d.etcd_error,
            # The last answer from etcd (watch event or heartbeat read): how stale the table is.
            "last_ok": datetime.fromtimestamp(d.etcd_last_ok, UTC).isoformat()
            if d.etcd_last_ok
            else None,
        },
        "data": [{"name": n, "instances": docs} for n, docs in sorted(services.items())],
    }


def ready_models(state: GatewayState) -> list[tuple[ModelInfo, Instance]]:
    """Every model of every ready instance, first claim first, each id once."""
    seen: set[str] = set()
    found: list[tuple[ModelInfo, Instance]] = []
    for instance in _claim_ordered(state.table):
        if state.upstreams.describe(instance) != "ready" or instance.metadata is None:
            continue
        for model in instance.metadata.models:
            if model.id not in seen:
                seen.add(model.id)
                found.append((model, instance))
    return found


def _claim_ordered(table: RoutingTable) -> list[Instance]:
    """Instances in the order the table ranks them (targets are in claim order)."""
    ordered: dict[str, Instance] = {}
    for route in table.routes:
        for target in route.targets:
            ordered.setdefault(target.key, target.instance)
    return list(ordered.values())


def _model_object(model: ModelInfo, instance: Instance) -> dict[str, Any]:
    created = getattr(model, "created", None)
    if not isinstance(created, int):
        created = int(instance.seen_at)
    return {"id": model.id, "object": "model", "created": created, "owned_by": model.owned_by}


def _route_doc(route: Route, upstreams: Upstreams) -> dict[str, Any]:
    return {
        "method": route.method,
        "path": route.path,
        "operation_id": route.operation_id,
        "streaming": route.streaming,
        "public": route.public,
        "service": route.service,
        "targets": [
            {**_instance_ref(t.instance, upstreams), "models": sorted(t.models)}
            for t in route.targets
        ],
    }


def _model_provenance(table: RoutingTable, upstreams: Upstreams) -> list[dict[str, Any]]:
    """model -> the instances serving it, each with its lease and etcd revision."""
    served: dict[str, dict[str, dict[str, Any]]] = {}
    for instance in _claim_ordered(table):
        for model in instance.metadata.models if instance.metadata else ():
            served.setdefault(model.id, {})[instance.key] = _instance_ref(instance, upstreams)
    return [{"model": m, "served_by": list(refs.values())} for m, refs in served.items()]


def _instance_ref(instance: Instance, upstreams: Upstreams) -> dict[str, Any]:
    return {
        "service": instance.service,
        "instance_id": instance.instance_id,
        "base_url": instance.base_url,
        "source": instance.source,
        "key": instance.key,
        "lease": instance.lease or None,
        "revision": instance.revision or None,
        "state": upstreams.describe(instance),
    }


def _instance_doc(instance: Instance, upstreams: Upstreams) -> dict[str, Any]:
    state = upstreams.states.get(instance.key)
    meta = instance.metadata
    return {
        **_instance_ref(instance, upstreams),
        "kind": instance.kind,
        "draining": instance.draining,
        # Set while its key is gone by lease expiry and it is kept for passing its probe (grace.py)
        "lease_expired_at": datetime.fromtimestamp(instance.expired_at, UTC).isoformat()
        if instance.expired_at
        else None,
        "version": meta.service.version if meta else None,
        "in_flight": state.in_flight if state else 0,
        "consecutive_failures": state.failures if state else 0,
        "detail": state.detail if state else None,
        "error": instance.error,
        "last_seen": datetime.fromtimestamp(instance.seen_at, UTC).isoformat(),
        "last_ok": datetime.fromtimestamp(state.last_ok, UTC).isoformat()
        if state and state.last_ok
        else None,
    }
