"""Request bodies larger than ``MAX_BODY_BYTES`` are refused with 413 before they are parsed.

A route class rather than middleware so the refusal is an ordinary ``PayloadTooLargeError``
rendered by the kit (request id, metrics and access log included). The declared
``Content-Length`` is checked first; the bytes actually received are counted too (chunked
bodies, lying clients), and reading stops at the limit.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import Message

from nexus_kit import InvalidRequestError, PayloadTooLargeError

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class BodyLimitRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def limited(request: Request) -> Response:
            limit: int = request.app.state.kit.settings.max_body_bytes
            body = await read_limited(request, limit)
            return await handler(_replay(request, body))

        return limited


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequestError("Invalid Content-Length header.", code="invalid_header")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"Request body too large: the limit is {limit} bytes.")


def _replay(request: Request, body: bytes) -> Request:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)
