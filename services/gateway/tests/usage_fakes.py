"""Fakes for the usage tests: an OpenAI-style LLM whose usage the test decides, as an ASGI app
(served by a real uvicorn), and an in-memory body reader with aiohttp's ``readany``/``at_eof``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support import meta_json, metadata

PROMPT_TOKENS = 11
COMPLETION_TOKENS = 4
CHAT_PATHS = [("POST", "/v1/chat/completions"), ("POST", "/v1/completions"),
              ("POST", "/v1/embeddings"), ("GET", "/v1/models")]  # fmt: skip


class Chunks:
    """Body chunks as the upstream sent them; ``readany`` returns one at a time."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    async def readany(self) -> bytes:
        await asyncio.sleep(0)
        return self.chunks.pop(0) if self.chunks else b""

    def at_eof(self) -> bool:
        return not self.chunks


def sse(*docs: Any) -> bytes:
    return b"".join(b"data: " + orjson.dumps(d) + b"\n\n" for d in docs) + b"data: [DONE]\n\n"


def chat_chunk(text: str, usage: Any = None) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m-served",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
            "usage": usage}  # fmt: skip


def usage_chunk(prompt: int = PROMPT_TOKENS, completion: int = COMPLETION_TOKENS) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m-served", "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}}  # fmt: skip


def fake_llm(received: list[dict[str, Any]] | None = None) -> Starlette:
    """Chat, completions and embeddings with OpenAI's usage; streams send the usage chunk only
    when ``stream_options.include_usage`` is true, as OpenAI does, cut across small writes."""
    seen = received if received is not None else []

    async def meta(_: Request) -> Response:
        return JSONResponse(meta_json(metadata("llm", CHAT_PATHS, models=["m1", "m2", "slow"])))

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        seen.append(body)
        usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                 "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}  # fmt: skip
        if not body.get("stream"):
            return JSONResponse({
                "id": "c1", "object": "chat.completion", "created": 1, "model": "m-served",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "hi there"}}],
                "usage": usage,
            })  # fmt: skip
        include = (body.get("stream_options") or {}).get("include_usage") is True
        if body.get("model") == "slow":  # paced: a client can hang up half way (bounded: ~5 s)

            async def paced() -> AsyncIterator[bytes]:
                for n in range(100):
                    yield b"data: " + orjson.dumps(chat_chunk(f"w{n} ")) + b"\n\n"
                    await asyncio.sleep(0.05)
                yield b"data: " + orjson.dumps(usage_chunk()) + b"\n\ndata: [DONE]\n\n"

            return StreamingResponse(paced(), media_type="text/event-stream")
        docs = [chat_chunk("hi"), chat_chunk(" there")]
        if include:
            docs.append(usage_chunk())
        raw = sse(*docs)

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(raw), 37):  # events split across writes
                yield raw[start : start + 37]
                await asyncio.sleep(0)

        return StreamingResponse(pieces(), media_type="text/event-stream")

    async def embeddings(request: Request) -> Response:
        seen.append(orjson.loads(await request.body()))
        return JSONResponse({"object": "list", "model": "m1",
                             "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}],
                             "usage": {"prompt_tokens": 5, "total_tokens": 5}})  # fmt: skip

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": "m1", "object": "model", "created": 0, "owned_by": "llm"}]})  # fmt: skip

    return Starlette(routes=[
        Route("/v1/metadata", meta), Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", chat, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]), Route("/v1/models", models),
        Route("/health", lambda _: JSONResponse({"status": "ok"})),
        Route("/readyz", lambda _: JSONResponse({"status": "ready", "checks": {}})),
    ])  # fmt: skip
