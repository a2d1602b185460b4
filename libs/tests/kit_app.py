"""A small service built on the kit, used by the kit's own tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from nexus_kit import InvalidRequestError, ModelNotFoundError, endpoint_flags, forward_headers
from nexus_kit.logging import get_logger


class Item(BaseModel):
    name: str = Field(min_length=1)
    count: int = Field(ge=1)
    tags: list[str] = []


def demo_router() -> APIRouter:
    router = APIRouter()

    @router.post("/v1/items", operation_id="demo.create")
    async def create(item: Item) -> dict[str, object]:
        get_logger("demo").info("created", item=item.name)
        return {"ok": True, "name": item.name}

    @router.get(
        "/v1/items/{item_id}", operation_id="demo.get", openapi_extra=endpoint_flags(public=True)
    )
    async def get(item_id: str) -> dict[str, str]:
        if item_id == "missing-model":
            raise ModelNotFoundError("gpt-x")
        if item_id == "bad":
            raise InvalidRequestError("bad id", param="item_id")
        return {"id": item_id, **forward_headers()}

    @router.get("/v1/boom", operation_id="demo.boom")
    async def boom() -> dict[str, str]:
        raise RuntimeError("secret internal detail")

    @router.get(
        "/v1/stream", operation_id="demo.stream", openapi_extra=endpoint_flags(streaming=True)
    )
    async def stream() -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"data: {i}\n\n".encode()

        return StreamingResponse(gen(), media_type="text/event-stream")

    return router
