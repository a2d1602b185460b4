"""A fast mock OpenAI (and Ollama-metadata) upstream: raw asyncio + httptools on uvloop.

It has to be much faster than anything measured in front of it, so it is a bare
``asyncio.Protocol`` with httptools' parser (keep-alive, chunked request bodies) and
precomputed responses. It never parses JSON: the ``model`` and ``stream`` fields are found
with a regex over the body bytes.

- ``POST /v1/chat/completions``: a small fixed ``chat.completion``; with ``"stream": true``,
  SSE: N ``chat.completion.chunk`` events (default 20) then ``data: [DONE]``, sent at once;
  with model ``paced`` (or header ``x-mock-pace-ms``), one event every 10 ms, the first at once.
  Header ``x-mock-chunks`` sets N.
- ``POST /v1/responses`` (streamed): the same, as Responses API events (``response.created``,
  N ``response.output_text.delta``, ``response.completed``), named SSE events, no ``[DONE]``.
- ``GET /v1/models``, ``GET /api/tags`` (the same models, Ollama's shape), ``GET /api/version``,
  ``GET /health``, ``GET /readyz``.

    python bench/mock_upstream.py --port 9999      # or --port 0: prints "listening on <port>"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import cast

import httptools
import uvloop

MODELS = ("bench", "paced")
PACED_MODEL = "paced"
DEFAULT_CHUNKS = 20
DEFAULT_PACE_MS = 10.0
CREATED = 1_700_000_000

_MODEL_RE = re.compile(rb'"model"\s*:\s*"([^"]{1,200})"')
_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')


def _response(status: bytes, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type
        + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _completion(model: str) -> bytes:
    return _json(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello from the mock upstream."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 8, "completion_tokens": 6, "total_tokens": 14},
        }
    )


def _chunk_event(model: str, content: str | None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    body = _json(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )
    return b"data: " + body + b"\n\n"


def _chunked(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk (transfer-encoding framing)."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
DONE_EVENT = b"data: [DONE]\n\n"


def _named_event(kind: str, doc: dict[str, object]) -> bytes:
    return f"event: {kind}\n".encode() + b"data: " + _json({"type": kind, **doc}) + b"\n\n"


def _responses_events(model: str, chunks: int) -> list[bytes]:
    """A Responses API stream: created, ``chunks - 2`` text deltas (at least one), completed."""
    head = {"id": "resp_bench", "object": "response", "created_at": CREATED, "model": model}
    ids = {"item_id": "msg_bench", "output_index": 0, "content_index": 0}
    events = [_named_event("response.created", {"sequence_number": 0,
                                                 "response": {**head, "status": "in_progress"}})]
    for i in range(max(chunks - 2, 1)):
        events.append(_named_event("response.output_text.delta",
                                   {"sequence_number": i + 1, "delta": f"tok{i} ", **ids}))
    done = {"sequence_number": len(events), "response": {**head, "status": "completed"}}
    events.append(_named_event("response.completed", done))
    return events  # fmt: skip


CHUNKED_END = b"0\r\n\r\n"


class Responses:
    """Every byte string the mock sends, built once per model."""

    def __init__(self) -> None:
        self.completion = {m: _response(b"200 OK", _completion(m)) for m in MODELS}
        self.events: dict[str, list[bytes]] = {}
        models_list = {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": CREATED, "owned_by": "mock"} for m in MODELS
            ],
        }
        tags = {
            "models": [
                {
                    "name": m, "model": m, "modified_at": "2024-01-01T00:00:00Z", "size": 1,
                    "digest": "0" * 64,
                    "details": {"format": "gguf", "family": "mock", "parameter_size": "1B"},
                }
                for m in MODELS
            ]
        }  # fmt: skip
        self.get = {
            b"/v1/models": _response(b"200 OK", _json(models_list)),
            b"/api/tags": _response(b"200 OK", _json(tags)),
            # 0.14: the gateway routes /v1/responses and /v1/messages to it (ollama.SINCE)
            b"/api/version": _response(b"200 OK", b'{"version":"0.14.0"}'),
            b"/health": _response(b"200 OK", b'{"status":"ok"}'),
            b"/readyz": _response(b"200 OK", b'{"status":"ready","checks":{}}'),
            b"/": _response(b"200 OK", b"Ollama is running", b"text/plain"),
        }
        self.not_found = _response(
            b"404 Not Found",
            b'{"error":{"message":"not found","type":"invalid_request_error",'
            b'"param":null,"code":"not_found"}}',
        )
        self.bad_request = _response(
            b"400 Bad Request",
            b'{"error":{"message":"bad request","type":"invalid_request_error",'
            b'"param":null,"code":null}}',
        )

    def stream_events(self, model: str, chunks: int) -> list[bytes]:
        """``chunks`` content events, the last with ``finish_reason``, then ``[DONE]``."""
        key = f"{model}\0{chunks}"
        if key not in self.events:
            events = [_chunk_event(model, f"tok{i} ") for i in range(max(chunks - 1, 0))]
            events.append(_chunk_event(model, "end", "stop"))
            self.events[key] = [_chunked(e) for e in events] + [_chunked(DONE_EVENT)]
        return self.events[key]

    def responses_events(self, model: str, chunks: int) -> list[bytes]:
        key = f"responses\0{model}\0{chunks}"
        if key not in self.events:
            self.events[key] = [_chunked(e) for e in _responses_events(model, chunks)]
        return self.events[key]

    def stream_at_once(self, model: str, chunks: int) -> bytes:
        return SSE_HEAD + b"".join(self.stream_events(model, chunks)) + CHUNKED_END


RESPONSES = Responses()


@dataclass
class Request:
    method: bytes = b""
    url: bytes = b""
    body: list[bytes] = field(default_factory=list)
    chunks: int | None = None
    pace_ms: float | None = None
    keep_alive: bool = True


class MockProtocol(asyncio.Protocol):
    """One connection: parse requests with httptools, answer in order (no pipelining races)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.current = Request()
        self.pending: deque[Request] = deque()
        self.streaming: asyncio.Task[None] | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._close()
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(RESPONSES.bad_request)
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.streaming is not None:
            self.streaming.cancel()

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self.current = Request()

    def on_url(self, url: bytes) -> None:
        self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname == b"x-mock-chunks":
            self.current.chunks = int(value)
        elif lname == b"x-mock-pace-ms":
            self.current.pace_ms = float(value)

    def on_body(self, body: bytes) -> None:
        self.current.body.append(body)

    def on_message_complete(self) -> None:
        req = self.current
        req.method = self.parser.get_method()
        req.keep_alive = self.parser.should_keep_alive()
        if self.streaming is not None:
            self.pending.append(req)
        else:
            self._handle(req)

    # -- responses
    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def _handle(self, req: Request) -> None:
        transport = self.transport
        if transport is None:
            return
        path = req.url.split(b"?", 1)[0]
        if req.method == b"POST" and path in (b"/v1/chat/completions", b"/v1/responses"):
            body = b"".join(req.body)
            found = _MODEL_RE.search(body)
            model = found.group(1).decode() if found else MODELS[0]
            if model not in RESPONSES.completion:
                model = MODELS[0]
            pace = req.pace_ms if req.pace_ms is not None else (
                DEFAULT_PACE_MS if model == PACED_MODEL else 0.0
            )  # fmt: skip
            chunks = req.chunks if req.chunks is not None else DEFAULT_CHUNKS
            if path == b"/v1/responses":
                events = RESPONSES.responses_events(model, chunks)
            else:
                events = RESPONSES.stream_events(model, chunks)
            if _STREAM_RE.search(body) is None:
                transport.write(RESPONSES.completion[model])
            elif pace <= 0:
                transport.write(SSE_HEAD + b"".join(events) + CHUNKED_END)
            else:
                self.streaming = asyncio.get_running_loop().create_task(
                    self._paced(req, events, pace / 1000.0)
                )
                return
        elif req.method == b"GET" and path in RESPONSES.get:
            transport.write(RESPONSES.get[path])
        else:
            transport.write(RESPONSES.not_found)
        if not req.keep_alive:
            self._close()

    async def _paced(self, req: Request, events: list[bytes], pace_s: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            if self.transport is None:
                return
            self.transport.write(SSE_HEAD + events[0])
            for i, event in enumerate(events[1:], start=1):
                if i < len(events) - 1:  # [DONE] follows the last chunk at once
                    await asyncio.sleep(max(0.0, start + i * pace_s - loop.time()))
                if self.transport is None:
                    return
                self.transport.write(event)
            if self.transport is None:
                return
            self.transport.write(CHUNKED_END)
        finally:
            self.streaming = None
        if not req.keep_alive:
            self._close()
            return
        while self.pending and self.streaming is None and self.transport is not None:
            self._handle(self.pending.popleft())


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(MockProtocol, host, port, backlog=4096, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
