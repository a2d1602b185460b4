"""The example endpoint. Replace it with your service's own routes."""

from __future__ import annotations

from fastapi import APIRouter, Request

from .schemas import EchoRequest, EchoResponse

router = APIRouter()


@router.post("/v1/echo", operation_id="template.echo", summary="Echo a message back")
async def echo(body: EchoRequest, request: Request) -> EchoResponse:
    settings = request.app.state.kit.settings
    return EchoResponse(message=body.message, service=settings.service_name)
