"""The hot path stays cheap: regression checks that count work instead of timing it.

Speed is measured by ``bench/`` (issue 7); these tests pin down the properties the figures
rest on, so a change that quietly undoes one fails here rather than in the next benchmark:

- keep-alive: N sequential requests reuse one pooled upstream connection;
- no full-body JSON parse (``model``/``stream`` are peeked), no client, session or logger
  created per request, no metric label lookup once a route's children exist;
- proxied paths never walk Starlette's router (``dispatch.ProxyFirst``);
- a relayed body's chunks skip the middleware's send wrappers (``nexus_kit.app.NexusApp``);
- a stream does not hold its request's headers once they are forwarded;
- a finished request leaves no reference cycle: its objects go by refcount, not in the cyclic
  collector's passes, which stall every request in flight (issue 14).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import httpx
import orjson
import pytest
import structlog
import uvicorn
from asgi_lifespan import LifespanManager
from prometheus_client.metrics import MetricWrapperBase
from starlette.routing import Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.main import build_app
from app.state import GatewayState
from tests.support import eventually, gateway, metadata, settings
from tests.upstream import FakeUpstream, Reply, Seen, answer

N = 20
CHAT = {
    "model": "bench",
    "messages": [{"role": "system", "content": "You answer with {\"model\": ...} JSON."},
                 {"role": "user", "content": "Say hello. " * 50}],
    "max_tokens": 16,
    "stream": False,
}  # fmt: skip


@asynccontextmanager
async def chat_upstream() -> AsyncIterator[tuple[httpx.AsyncClient, GatewayState, FakeUpstream]]:
    endpoints = [("POST", "/v1/chat/completions"), ("GET", "/v1/models")]
    fake = FakeUpstream(metadata("llm", endpoints, models=["bench"]))
    fake.route("POST", "/v1/chat/completions", answer(Reply.json({"id": "c", "choices": []})))
    async with fake, gateway(settings(static_backends={"llm": fake.url})) as (client, state):
        yield client, state, fake


async def chat(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 200, resp.text


class Counter:
    """Counts calls to the callables it wraps (still calling them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.calls: dict[str, int] = {}

    def wrap(self, owner: Any, name: str, label: str | None = None) -> None:
        original: Callable[..., Any] = getattr(owner, name)
        key = label or f"{getattr(owner, '__name__', owner)}.{name}"
        self.calls[key] = 0

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[key] += 1
            return original(*args, **kwargs)

        self.monkeypatch.setattr(owner, name, counted)


async def test_sequential_requests_reuse_one_upstream_connection() -> None:
    async with chat_upstream() as (client, _, fake):
        await chat(client)  # opens the pooled connection
        opened = fake.connections
        for _ in range(N):
            await chat(client)
        assert fake.connections == opened  # N more requests, not one more connection
        assert len(fake.calls("POST", "/v1/chat/completions")) == N + 1


async def test_no_per_request_parse_client_logger_or_label_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with chat_upstream() as (client, _, _):
        await chat(client)  # first request: label children, pool connection, lazy set-up
        counter = Counter(monkeypatch)
        counter.wrap(orjson, "loads")
        counter.wrap(json, "loads")
        counter.wrap(aiohttp.ClientSession, "__init__", "aiohttp.ClientSession()")
        counter.wrap(aiohttp.TCPConnector, "__init__", "aiohttp.TCPConnector()")
        counter.wrap(httpx.AsyncClient, "__init__", "httpx.AsyncClient()")
        counter.wrap(logging, "getLogger")
        counter.wrap(structlog, "get_logger")
        counter.wrap(MetricWrapperBase, "labels", "prometheus labels()")
        for _ in range(N):
            await chat(client)
        assert counter.calls == dict.fromkeys(counter.calls, 0)


async def test_proxied_paths_skip_the_router(monkeypatch: pytest.MonkeyPatch) -> None:
    async with chat_upstream() as (client, _, _):
        counter = Counter(monkeypatch)
        counter.wrap(Router, "__call__", "Router.__call__")
        await chat(client)
        assert counter.calls["Router.__call__"] == 0
        assert (await client.get("/health")).status_code == 200  # own routes: the router
        assert counter.calls["Router.__call__"] == 1
        wrong_method = await client.post("/v1/models")  # an own path, any method: the router
        assert wrong_method.status_code == 405
        assert counter.calls["Router.__call__"] == 2


class SeenSends:
    """A middleware that records the type of every message sent through it."""

    seen: list[str] = []

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def watched(message: Message) -> None:
            SeenSends.seen.append(message["type"])
            await send(message)

        await self.app(scope, receive, watched)


async def test_stream_chunks_skip_the_middleware_send_wrappers() -> None:
    """Only the start goes through the middleware chain (its headers added there); the body
    chunks go to the server's own send, and the client still gets all of them."""
    events = b"".join(b'data: {"n": %d}\n\n' % n for n in range(5)) + b"data: [DONE]\n\n"
    sse = Reply(200, events, [("content-type", "text/event-stream")])
    fake = FakeUpstream(metadata("llm", [("POST", "/v1/chat/completions")], models=["bench"]))
    fake.route("POST", "/v1/chat/completions", answer(sse))
    SeenSends.seen = []
    async with fake:
        app = build_app(settings(static_backends={"llm": fake.url}, sse_first_comment_s=60))
        app.add_middleware(SeenSends)
        async with LifespanManager(app) as manager:
            await app.state.gateway.discovery.synced.wait()
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status_code == 200
    assert resp.content == events
    assert resp.headers["x-request-id"]  # added by the kit's layer, on the start
    assert SeenSends.seen == ["http.response.start"]


class SeenHeaders:
    """A middleware that keeps the scope's header list it was given (the object itself)."""

    lists: list[list[tuple[bytes, bytes]]] = []

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            SeenHeaders.lists.append(scope["headers"])
        await self.app(scope, receive, send)


async def test_a_stream_does_not_hold_its_request_headers() -> None:
    """Forwarded upstream, then emptied: the one list the server, the scope and the
    middleware share is not held for a stream's life (~5 KB with the openai SDK's)."""
    events = b'data: {"n": 1}\n\ndata: [DONE]\n\n'
    fake = FakeUpstream(metadata("llm", [("POST", "/v1/chat/completions")], models=["bench"]))
    fake.route("POST", "/v1/chat/completions",
               answer(Reply(200, events, [("content-type", "text/event-stream")])))  # fmt: skip
    SeenHeaders.lists = []
    async with fake:
        app = build_app(settings(static_backends={"llm": fake.url}))
        app.add_middleware(SeenHeaders)
        async with LifespanManager(app) as manager:
            await app.state.gateway.discovery.synced.wait()
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True},
                                         headers={"x-stainless-lang": "python"})  # fmt: skip
    assert resp.status_code == 200
    assert resp.content == events
    assert fake.calls("POST", "/v1/chat/completions")[0].header("x-stainless-lang") == "python"
    assert SeenHeaders.lists == [[]]


# What a proxied request leaves behind, by type: the gateway's, the kit's, and the server's and
# client's per-request objects (a cycle through any of them keeps the whole request).
PER_REQUEST = ("app.", "nexus_kit.", "uvicorn.", "aiohttp.")


def cyclic_garbage() -> dict[str, int]:
    """Types (module-qualified) of what the cyclic collector finds unreachable now."""
    gc.collect()
    found: dict[str, int] = {}
    for obj in gc.garbage:
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        if name.startswith(PER_REQUEST):
            found[name] = found.get(name, 0) + 1
    gc.garbage.clear()
    return found


async def test_finished_requests_leave_no_reference_cycles() -> None:
    """Through a real uvicorn server on loopback, over one keep-alive connection: JSON, a
    stream, and a stream slower than ``liveness.WATCH_AFTER_S`` (its disconnect watcher
    started, then cancelled). Each used to leave a cycle: the server's send kept in the
    scope, the usage Meter and its Tap, the cancelled watcher holding its Watch."""
    events = b"".join(b'data: {"n": %d}\n\n' % n for n in range(3)) + b"data: [DONE]\n\n"

    async def slow_stream(_: Seen) -> Reply:
        await asyncio.sleep(0.3)
        return Reply(200, events, [("content-type", "text/event-stream")])

    endpoints = [("POST", "/v1/chat/completions"), ("POST", "/v1/embeddings")]
    fake = FakeUpstream(metadata("llm", endpoints, models=["bench"]))
    fake.route("POST", "/v1/chat/completions", slow_stream)
    fake.route("POST", "/v1/embeddings", answer(Reply.json({"data": [], "usage": {}})))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    async with fake:
        app = build_app(settings(static_backends={"llm": fake.url}))
        server = uvicorn.Server(uvicorn.Config(app, loop="asyncio", log_config=None))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            await eventually(lambda: server.started, 10, "uvicorn started")
            await asyncio.wait_for(app.state.gateway.discovery.synced.wait(), 10)
            base = f"http://127.0.0.1:{sock.getsockname()[1]}"
            async with httpx.AsyncClient(base_url=base) as client:

                async def requests() -> None:
                    embed = await client.post("/v1/embeddings", json={"model": "bench"})
                    assert embed.status_code == 200, embed.text
                    chat = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
                    assert chat.status_code == 200, chat.text
                    assert chat.content.endswith(b"data: [DONE]\n\n")

                await requests()  # warm: the pool, lazy set-up, label children
                gc.collect()
                gc.set_debug(gc.DEBUG_SAVEALL)  # the collector keeps what it would free
                try:
                    cyclic_garbage()
                    for _ in range(3):
                        await requests()
                    left = cyclic_garbage()
                finally:
                    gc.set_debug(0)
                    gc.garbage.clear()
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, 10)
    assert left == {}
