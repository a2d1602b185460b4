"""A fake Ollama server for the playground's chat, speaking Ollama's documented wire format:
``GET /api/version``, ``GET /api/tags`` (the model list the gateway reads) and the OpenAI
compatible ``POST /v1/chat/completions``, streamed as ``chat.completion.chunk`` SSE events
ending with ``data: [DONE]`` (https://github.com/ollama/ollama/blob/main/docs/openai.md).

Chunks are spaced out, so a browser can be seen rendering a reply that grows step by step."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

MODEL = "llama3.2:latest"
WORDS = ["Hello", " from", " the", " fake", " Ollama", " model", "."]
REPLY = "".join(WORDS)
CHUNK_GAP_S = 0.15


async def version(_: Request) -> JSONResponse:
    return JSONResponse({"version": "0.12.0"})


async def tags(_: Request) -> JSONResponse:
    model = {
        "name": MODEL, "model": MODEL, "modified_at": "2026-01-10T12:34:56.000000Z",
        "size": 2019393189, "digest": "a80c4f17acd5" + "0" * 52,
        "details": {"parent_model": "", "format": "gguf", "family": "llama",
                    "families": ["llama"], "parameter_size": "3.2B",
                    "quantization_level": "Q4_K_M"},
    }  # fmt: skip
    return JSONResponse({"models": [model]})


def _chunk(content: str | None, finish: str | None) -> bytes:
    delta = {"role": "assistant", "content": content} if content is not None else {}
    doc = {
        "id": "chatcmpl-42", "object": "chat.completion.chunk", "created": int(time.time()),
        "model": MODEL, "system_fingerprint": "fp_ollama",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }  # fmt: skip
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


async def _stream() -> AsyncIterator[bytes]:
    for word in WORDS:
        yield _chunk(word, None)
        await asyncio.sleep(CHUNK_GAP_S)
    yield _chunk(None, "stop")
    yield b"data: [DONE]\n\n"


async def chat(request: Request) -> JSONResponse | StreamingResponse:
    body = await request.json()
    if body.get("model") not in (MODEL, MODEL.removesuffix(":latest")):
        error = {"message": f"model \"{body.get('model')}\" not found, try pulling it first",
                 "type": "api_error", "param": None, "code": None}  # fmt: skip
        return JSONResponse({"error": error}, status_code=404)
    if body.get("stream"):
        return StreamingResponse(_stream(), media_type="text/event-stream")
    message = {"role": "assistant", "content": REPLY}
    return JSONResponse({
        "id": "chatcmpl-42", "object": "chat.completion", "created": int(time.time()),
        "model": MODEL, "system_fingerprint": "fp_ollama",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    })  # fmt: skip


def fake_ollama() -> Starlette:
    return Starlette(
        routes=[
            Route("/api/version", version),
            Route("/api/tags", tags),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )
