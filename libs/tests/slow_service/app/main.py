"""A kit service with a slow streaming endpoint, to test graceful drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI
from fastapi.responses import StreamingResponse

from nexus_kit import ServiceSettings, create_app, endpoint_flags, load_settings

router = APIRouter()


@router.get("/v1/slow", operation_id="slow.stream", openapi_extra=endpoint_flags(streaming=True))
async def slow(chunks: int = 5, delay: float = 0.3) -> StreamingResponse:
    async def gen() -> AsyncIterator[bytes]:
        for i in range(chunks):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(delay)
        yield b"end\n"

    return StreamingResponse(gen(), media_type="text/plain")


def build_app(settings: ServiceSettings | None = None) -> FastAPI:
    return create_app(settings or load_settings(ServiceSettings), routers=[router])


app = build_app()
