"""Fakes of LLM servers that cannot run here, faithful to their documented wire formats.

- ``ollama``: Ollama 0.13.x/0.14.x: ``/api/version``, ``/api/tags``, the OpenAI layer
  (``/v1/chat/completions``; ``/v1/responses`` from 0.13.3, plain and streamed as named SSE
  events) and the Anthropic layer (``/v1/messages`` from 0.14.0, plain and streamed, errors in
  Anthropic's shape). Paths a version does not serve answer gin's ``404 page not found``.
- ``openai_server``: vLLM (``/health`` empty 200, ``/v1/models`` with ``root``/``parent``/
  ``max_model_len``/``permission``, ``/version``), llama.cpp's server (``/health``
  ``{"status":"ok"}`` or 503 ``Loading model``; ``/v1/models`` with ``meta`` and the extra
  ``models`` list) and a hosted API (no ``/health``; 401 ``invalid_api_key`` without its key).

Every server records the headers it saw (``Seen``) and can be told to hold its answer until
the test says go (``Gate``), so tests wait on events, never on the clock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

CREATED = 1_733_000_000
TEXT = ("Hel", "lo", " there")


@dataclass
class Gate:
    """Shared between the test thread and the fake's loop."""

    hold: threading.Event | None = None  # when set up: the answer waits for it
    first: threading.Event | None = None  # when set up: a stream's first event waits for it
    streaming: bool = False  # a stream's headers went out
    endless: bool = False  # streams never finish (until the client leaves)
    unavailable: set[str] = field(default_factory=set)  # models answered with 503
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)

    async def wait(self, which: str = "hold") -> None:
        deadline = time.monotonic() + 20
        while (event := getattr(self, which)) is not None and not event.is_set():
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.005)


def _sse(event: str | None, doc: dict[str, Any]) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(doc) + b"\n\n"


async def _seen(request: Request, gate: Gate) -> dict[str, Any]:
    gate.headers.append(dict(request.headers))
    body: dict[str, Any] = orjson.loads(await request.body())
    gate.bodies.append(body)
    await gate.wait()
    return body


def _openai_error(message: str, status: int, type_: str, code: str | None) -> JSONResponse:
    error = {"message": message, "type": type_, "param": None, "code": code}
    return JSONResponse({"error": error}, status_code=status)


# -- chat completions (every server) ----------------------------------------------------


def _chunk(model: str, content: str | None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    doc = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": CREATED,
           "model": model, "choices": [choice]}  # fmt: skip
    return _sse(None, doc)


async def _chat_stream(model: str, gate: Gate, by: str) -> AsyncIterator[bytes]:
    gate.streaming = True  # the response start is sent before the first chunk is asked for
    await gate.wait("first")
    yield _chunk(model, by + ":")
    while gate.endless:
        yield _chunk(model, ".")
        await asyncio.sleep(0.02)
    for piece in TEXT:
        yield _chunk(model, piece)
    yield _chunk(model, None, "stop")
    yield b"data: [DONE]\n\n"


def chat_handler(gate: Gate, by: str, known: set[str]) -> Any:
    async def chat(request: Request) -> Response:
        body = await _seen(request, gate)
        model = body.get("model", "")
        if model in gate.unavailable:
            return _openai_error("model is loading", 503, "server_error", None)
        if model not in known:
            return _openai_error(f'model "{model}" not found', 404, "not_found_error", None)
        if body.get("stream"):
            return StreamingResponse(_chat_stream(model, gate, by), media_type="text/event-stream")
        message = {"role": "assistant", "content": f"{by}:" + "".join(TEXT)}
        return JSONResponse(
            {"id": "chatcmpl-1", "object": "chat.completion", "created": CREATED, "model": model,
             "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}}
        )  # fmt: skip

    return chat


# -- Ollama ------------------------------------------------------------------------------


def _response(model: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if text else []
    item = {"id": "msg_1", "type": "message", "status": status, "role": "assistant",
            "content": content}  # fmt: skip
    return {"id": "resp_1", "object": "response", "created_at": CREATED, "status": status,
            "model": model, "output": [item] if text else [], "parallel_tool_calls": True,
            "tool_choice": "auto", "tools": [], "error": None, "incomplete_details": None,
            "usage": {"input_tokens": 1, "output_tokens": 3, "total_tokens": 4,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}}}  # fmt: skip


async def _responses_stream(model: str) -> AsyncIterator[bytes]:
    seq = iter(range(1000))
    ids = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    yield _sse("response.created", {"type": "response.created", "sequence_number": next(seq),
                                    "response": _response(model, "", "in_progress")})  # fmt: skip
    yield _sse("response.in_progress", {"type": "response.in_progress", "sequence_number":
               next(seq), "response": _response(model, "", "in_progress")})  # fmt: skip
    item = {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant",
            "content": []}  # fmt: skip
    yield _sse("response.output_item.added", {"type": "response.output_item.added",
               "sequence_number": next(seq), "output_index": 0, "item": item})  # fmt: skip
    part = {"type": "output_text", "text": "", "annotations": []}
    yield _sse("response.content_part.added", {"type": "response.content_part.added",
               "sequence_number": next(seq), "part": part, **ids})  # fmt: skip
    for piece in TEXT:
        delta = {"type": "response.output_text.delta", "sequence_number": next(seq),
                 "delta": piece, "logprobs": [], **ids}  # fmt: skip
        yield _sse("response.output_text.delta", delta)
    text = "".join(TEXT)
    yield _sse("response.output_text.done", {"type": "response.output_text.done",
               "sequence_number": next(seq), "text": text, "logprobs": [], **ids})  # fmt: skip
    yield _sse("response.completed", {"type": "response.completed", "sequence_number":
               next(seq), "response": _response(model, text)})  # fmt: skip


def _message(model: str, text: str) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}] if text else [],
            "stop_reason": "end_turn" if text else None, "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 3}}  # fmt: skip


async def _messages_stream(model: str) -> AsyncIterator[bytes]:
    yield _sse("message_start", {"type": "message_start", "message": _message(model, "")})
    yield _sse("content_block_start", {"type": "content_block_start", "index": 0,
               "content_block": {"type": "text", "text": ""}})  # fmt: skip
    yield _sse("ping", {"type": "ping"})
    for piece in TEXT:
        yield _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": piece}})  # fmt: skip
    yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield _sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
               "stop_sequence": None}, "usage": {"output_tokens": 3}})  # fmt: skip
    yield _sse("message_stop", {"type": "message_stop"})


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("-")[0].split("."))


def ollama(
    gate: Gate, version: str = "0.14.0", models: tuple[str, ...] = ("llama3.2:latest",)
) -> Starlette:
    known = {*models, *(m.removesuffix(":latest") for m in models)}
    ours = _version_tuple(version)

    def gin_404() -> Response:
        return PlainTextResponse("404 page not found", status_code=404)

    async def api_version(_: Request) -> JSONResponse:
        return JSONResponse({"version": version})

    async def tags(_: Request) -> JSONResponse:
        items = [{"name": m, "model": m, "modified_at": "2025-12-01T10:00:00.000000000Z",
                  "size": 2019393189, "digest": "a80c4f17acd5", "details": {"format": "gguf",
                  "family": "llama", "parameter_size": "3.2B", "quantization_level": "Q4_K_M"}}
                 for m in models]  # fmt: skip
        return JSONResponse({"models": items})

    async def responses(request: Request) -> Response:
        if ours < (0, 13, 3):
            return gin_404()
        body = await _seen(request, gate)
        model = body.get("model", "")
        if model not in known:
            return _openai_error(f"model '{model}' not found", 404, "not_found_error", None)
        if body.get("stream"):
            return StreamingResponse(_responses_stream(model), media_type="text/event-stream")
        return JSONResponse(_response(model, "".join(TEXT)))

    async def messages(request: Request) -> Response:
        if ours < (0, 14, 0):
            return gin_404()
        body = await _seen(request, gate)
        model = body.get("model", "")
        if model not in known:
            error = {"type": "not_found_error", "message": f"model '{model}' not found"}
            return JSONResponse({"type": "error", "error": error}, status_code=404)
        if body.get("stream"):
            return StreamingResponse(_messages_stream(model), media_type="text/event-stream")
        return JSONResponse(_message(model, "".join(TEXT)))

    return Starlette(
        routes=[
            Route("/api/version", api_version),
            Route("/api/tags", tags),
            Route("/v1/chat/completions", chat_handler(gate, "ollama", known), methods=["POST"]),
            Route("/v1/responses", responses, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
        ]
    )


# -- vLLM, llama.cpp, a hosted API ----------------------------------------------------------


@dataclass
class Server:
    flavour: str  # vllm | llamacpp | hosted
    models: tuple[str, ...]
    key: str | None = None  # hosted: the upstream key it demands
    loading: bool = False  # llama.cpp: /health 503 while a model loads
    gate: Gate = field(default_factory=Gate)


def _models_doc(server: Server) -> dict[str, Any]:
    if server.flavour == "vllm":
        perm = {"id": "modelperm-1", "object": "model_permission", "created": CREATED,
                "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                "organization": "*", "group": None, "is_blocking": False}  # fmt: skip
        data = [{"id": m, "object": "model", "created": CREATED, "owned_by": "vllm", "root": m,
                 "parent": None, "max_model_len": 32768, "permission": [perm]}
                for m in server.models]  # fmt: skip
        return {"object": "list", "data": data}
    if server.flavour == "llamacpp":
        meta = {"vocab_type": 2, "n_vocab": 262144, "n_ctx_train": 32768, "n_embd": 1152,
                "n_params": 999885952, "size": 799525632}  # fmt: skip
        return {"models": [{"name": m, "model": m, "type": "model", "capabilities":
                            ["completion"]} for m in server.models],
                "object": "list",
                "data": [{"id": m, "object": "model", "created": CREATED, "owned_by": "llamacpp",
                          "meta": meta} for m in server.models]}  # fmt: skip
    data = [{"id": m, "object": "model", "created": CREATED, "owned_by": "hosted-org"}
            for m in server.models]  # fmt: skip
    return {"object": "list", "data": data}


def openai_server(server: Server) -> Starlette:
    def refused(request: Request) -> Response | None:
        if server.key is None:
            return None
        if request.headers.get("authorization") != f"Bearer {server.key}":
            return _openai_error("Incorrect API key provided.", 401, "invalid_request_error",
                                 "invalid_api_key")  # fmt: skip
        return None

    async def models(request: Request) -> Response:
        return refused(request) or JSONResponse(_models_doc(server))

    async def health(_: Request) -> Response:
        if server.flavour == "llamacpp":
            if server.loading:
                error = {"code": 503, "message": "Loading model", "type": "unavailable_error"}
                return JSONResponse({"error": error}, status_code=503)
            return JSONResponse({"status": "ok"})
        return Response(status_code=200)  # vLLM: an empty 200

    async def version(_: Request) -> JSONResponse:
        return JSONResponse({"version": "0.11.0"})

    chat = chat_handler(server.gate, server.flavour, set(server.models))

    async def guarded_chat(request: Request) -> Response:
        return refused(request) or await chat(request)

    routes = [
        Route("/v1/models", models),
        Route("/v1/chat/completions", guarded_chat, methods=["POST"]),
    ]
    if server.flavour != "hosted":
        routes.append(Route("/health", health))
    if server.flavour == "vllm":
        routes.append(Route("/version", version))
    return Starlette(routes=routes)
