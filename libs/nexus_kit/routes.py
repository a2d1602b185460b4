"""The endpoints every service serves: /health, /readyz, /v1/metadata, /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .health import run_checks
from .responses import JSONResponse

kit_router = APIRouter(tags=["kit"])


@kit_router.get("/health", operation_id="kit.health", include_in_schema=True)
async def health() -> dict[str, str]:
    """Liveness: the process runs. Checks nothing else."""
    return {"status": "ok"}


# Documented as answered, so a client (or schemathesis) can check the not-ready body too.
_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"description": "Not ready (a critical check failed, or draining): the same body."}
}


@kit_router.get("/readyz", operation_id="kit.readyz", responses=_NOT_READY)
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the service's critical dependencies answer, and it is not draining."""
    kit = request.app.state.kit
    ready, checks = await run_checks(kit.checks)
    if kit.drainer.draining:
        ready = False
        checks["draining"] = {"status": "fail", "critical": True, "detail": "shutting down"}
    body: dict[str, Any] = {"status": "ready" if ready else "not_ready", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


@kit_router.get("/v1/metadata", operation_id="kit.metadata")
async def metadata(request: Request) -> JSONResponse:
    """Discovery document (schema v1)."""
    doc = request.app.state.kit.describe()
    return JSONResponse(doc.model_dump(mode="json", exclude_none=True))


@kit_router.get("/metrics", operation_id="kit.metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    registry = request.app.state.kit.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
