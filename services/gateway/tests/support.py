"""Helpers the gateway's tests share: settings, an in-process gateway, fakes we own.

- ``FakeEtcd``: an in-memory etcd (revisions, history, compaction, outages) behind the same
  ``EtcdSource`` protocol discovery uses, so every failure can be driven deterministically.
- ``fake_ollama``: a small Ollama-compatible server (``/api/tags``, ``/api/version``, the
  OpenAI-compatible endpoints) whose streams can be held until the test says go.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.discovery import Instance, Snapshot
from app.etcd import Change, Compacted, KeyValue
from app.main import build_app
from app.settings import GatewaySettings
from app.state import GatewayState
from nexus_kit import Endpoint, ModelInfo, ServiceMetadata
from nexus_kit.metadata import Capabilities, ServiceInfo
from nexus_testing import ServiceProcess, wait_until
from nexus_testing.openai_schema import assert_openai_schema

# OpenAI schema checks: one shared helper (vendored component schemas).
__all__ = ["assert_openai_schema", "wait_until"]


# -- settings and an in-process gateway -------------------------------------------------


def settings(**overrides: Any) -> GatewaySettings:
    """Test settings: no etcd, no Ollama, no metrics port, no prober unless asked."""
    base: dict[str, Any] = {
        "etcd_endpoints": "",
        "ollama_base_url": "",
        "static_backends": {},
        "gateway_metrics_port": 0,
        "health_probe_interval_s": 0,
        "service_instance_id": "gateway-test",
        "log_level": "WARNING",
        "nexus_auth_enabled": False,  # auth has its own tests (test_auth_*.py)
        "gc_freeze_after_startup": False,  # a test process must keep collecting its garbage
    }
    return GatewaySettings(**{**base, **overrides})


@asynccontextmanager
async def gateway(
    config: GatewaySettings, **build: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, GatewayState]]:
    """The gateway app in-process (ASGITransport), once discovery is synced."""
    app = build_app(config, **build)
    async with LifespanManager(app) as manager:
        state: GatewayState = app.state.gateway
        await asyncio.wait_for(state.discovery.synced.wait(), 10)
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client, state


async def eventually(predicate: Callable[[], Any], timeout_s: float = 5.0, what: str = "") -> Any:
    """Poll until ``predicate()`` is truthy (a bound on waiting, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")


def metadata(
    name: str,
    endpoints: list[tuple[str, str]] | None = None,
    models: list[str] | None = None,
    public: frozenset[str] = frozenset(),
) -> ServiceMetadata:
    """A metadata document; endpoints as ``(method, path)``."""
    eps = [
        Endpoint(method=m, path=p, operation_id=f"{name}.{i}", public=p in public)  # type: ignore[arg-type]
        for i, (m, p) in enumerate(endpoints or [("POST", "/v1/echo")])
    ]
    return ServiceMetadata(
        service=ServiceInfo(name=name, version="1.0.0"),
        capabilities=Capabilities(),
        endpoints=eps,
        models=[ModelInfo(id=m, owned_by=name) for m in models or []],
    )


def instance(
    service: str,
    n: int = 0,
    *,
    meta: ServiceMetadata | None = None,
    base_url: str | None = None,
    **fields: Any,
) -> Instance:
    key = fields.pop("key", f"/nexus/services/{service}/{service}-{n}")
    return Instance(
        key=key,
        service=service,
        instance_id=f"{service}-{n}",
        base_url=base_url or f"http://{service}-{n}.test",
        metadata_url=f"{base_url or f'http://{service}-{n}.test'}/v1/metadata",
        metadata=meta if meta is not None else metadata(service),
        **fields,
    )


def snapshot(*instances: Instance, revision: int = 1) -> Snapshot:
    return Snapshot(revision, tuple(instances), True)


def meta_json(doc: ServiceMetadata) -> dict[str, Any]:
    return doc.model_dump(mode="json", exclude_none=True)


# -- an in-memory etcd ------------------------------------------------------------------


@dataclass
class FakeEtcd:
    """Revisions, history, compaction and outages, as discovery sees them."""

    kvs: dict[str, KeyValue] = field(default_factory=dict)
    history: list[Change] = field(default_factory=list)
    revision: int = 1
    compacted: int = 0
    down: bool = False
    reads: int = 0
    watch_starts: list[int] = field(default_factory=list)
    _watchers: list[asyncio.Queue[Change | None]] = field(default_factory=list)

    def source(self, endpoint: str) -> FakeSource:
        return FakeSource(self)

    def put(self, key: str, value: dict[str, Any] | bytes, lease: int = 0) -> int:
        self.revision += 1
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        created = self.kvs[key].create_revision if key in self.kvs else self.revision
        kv = KeyValue(key, raw, lease, created, self.revision)
        self.kvs[key] = kv
        self._record(Change("put", kv))
        return self.revision

    def delete(self, key: str) -> int:
        self.revision += 1
        self.kvs.pop(key, None)
        self._record(Change("delete", KeyValue(key, b"", 0, 0, self.revision)))
        return self.revision

    def compact(self) -> None:
        self.compacted = self.revision

    def outage(self) -> None:
        """Connections drop and new ones fail until ``recover``; the store itself lives on."""
        self.down = True
        for queue in self._watchers:
            queue.put_nowait(None)
        self._watchers.clear()

    def recover(self) -> None:
        self.down = False

    def _record(self, change: Change) -> None:
        self.history.append(change)
        if not self.down:
            for queue in self._watchers:
                queue.put_nowait(change)


class FakeSource:
    def __init__(self, store: FakeEtcd) -> None:
        self.store = store

    def _check(self) -> None:
        if self.store.down:
            raise ConnectionError("etcd unreachable (fake)")

    async def read(self, prefix: str) -> tuple[int, list[KeyValue]]:
        self._check()
        self.store.reads += 1
        found = [kv for k, kv in sorted(self.store.kvs.items()) if k.startswith(prefix)]
        return self.store.revision, found

    async def current_revision(self, prefix: str) -> int:
        self._check()
        return self.store.revision

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Change]:
        self._check()
        self.store.watch_starts.append(start_revision)
        if start_revision <= self.store.compacted:
            raise Compacted(f"compacted at {self.store.compacted}")
        queue: asyncio.Queue[Change | None] = asyncio.Queue()
        self.store._watchers.append(queue)
        for change in self.store.history:
            if change.kv.mod_revision >= start_revision and change.kv.key.startswith(prefix):
                yield change
        while (live := await queue.get()) is not None:
            if live.kv.mod_revision >= start_revision and live.kv.key.startswith(prefix):
                yield live
        raise ConnectionError("watch stream broken (fake)")

    async def close(self) -> None:
        pass


def registration(name: str, base_url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "base_url": base_url, **extra}


# -- a fake Ollama ----------------------------------------------------------------------


@dataclass
class OllamaScript:
    """What the fake Ollama knows, and how the test holds its streams."""

    models: list[str] = field(default_factory=lambda: ["llama3.2:latest", "nomic-embed:latest"])
    missing: set[str] = field(default_factory=lambda: {"ghost:latest"})  # listed, then 404
    invalid: set[str] = field(default_factory=lambda: {"picky:latest"})  # listed, then 400
    chunks: list[str] = field(default_factory=lambda: ["Hel", "lo", " there"])
    release: threading.Event = field(default_factory=threading.Event)  # set: send the rest
    hold_headers: threading.Event | None = None  # when set: wait for it before answering
    released_in_time: bool | None = None
    stream_closed: threading.Event = field(default_factory=threading.Event)
    endless: bool = False  # stream until the client goes away
    seen_request_ids: list[str] = field(default_factory=list)
    seen_headers: list[dict[str, str]] = field(default_factory=list)


async def _wait_event(event: threading.Event, timeout_s: float = 10.0) -> bool:
    """Wait for an event the test thread sets; polled, since it is not an asyncio one."""
    deadline = time.monotonic() + timeout_s
    while not event.is_set() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    return event.is_set()


def fake_ollama(script: OllamaScript) -> Starlette:
    def names() -> list[str]:
        return [*script.models, *script.missing, *script.invalid]

    async def tags(_: Request) -> JSONResponse:
        models = [{"name": n, "modified_at": "2024-05-10T12:34:56Z"} for n in names()]
        return JSONResponse({"models": models})

    async def version(_: Request) -> JSONResponse:
        return JSONResponse({"version": "0.0.0-fake"})

    def known(model: str) -> bool:
        return model in script.models or f"{model}:latest" in script.models

    def not_found(model: str) -> JSONResponse:
        error = {"message": f'model "{model}" not found, try pulling it first',
                 "type": "not_found_error", "param": None, "code": None}  # fmt: skip
        return JSONResponse({"error": error}, status_code=404)

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        script.seen_request_ids.append(request.headers.get("x-request-id", ""))
        script.seen_headers.append(dict(request.headers))
        if script.hold_headers is not None:
            await _wait_event(script.hold_headers)
        if f"{body['model']}:latest" in script.invalid:
            error = {"message": "temperature: must be at most 2", "type": "invalid_request_error",
                     "param": "temperature", "code": None}  # fmt: skip
            return JSONResponse({"error": error}, status_code=400)
        if not known(body["model"]):
            return not_found(body["model"])
        if body.get("stream"):
            return StreamingResponse(_stream(script, body["model"]), media_type="text/event-stream")
        message = {"role": "assistant", "content": "".join(script.chunks)}
        return JSONResponse(
            {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
             "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}}
        )  # fmt: skip

    async def embeddings(request: Request) -> Response:
        body = orjson.loads(await request.body())
        if not known(body["model"]):
            return not_found(body["model"])
        data = [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}]
        return JSONResponse({"object": "list", "data": data, "model": body["model"],
                             "usage": {"prompt_tokens": 1, "total_tokens": 1}})  # fmt: skip

    return Starlette(
        routes=[
            Route("/api/tags", tags),
            Route("/api/version", version),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
        ]
    )


def _chunk(model: str, content: str | None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    doc = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
    return b"data: " + orjson.dumps(doc) + b"\n\n"


async def _stream(script: OllamaScript, model: str) -> AsyncIterator[bytes]:
    try:
        yield _chunk(model, script.chunks[0])
        # Hold the rest until the client has seen the first chunk: a buffering proxy
        # would keep it from ever seeing it, and this wait would run out.
        script.released_in_time = await _wait_event(script.release)
        while script.endless:
            yield b": still going\n\n"
            await asyncio.sleep(0.01)
        for piece in script.chunks[1:]:
            yield _chunk(model, piece)
        yield _chunk(model, None, "stop")
        yield b"data: [DONE]\n\n"
    finally:
        script.stream_closed.set()


SERVICES = Path(__file__).resolve().parents[2]


def auth_process(tmp: Path, admin_key: str, internal_token: str) -> ServiceProcess:
    """The real auth service as a process, not yet started: SQLite and its signing key in
    ``tmp``, the bootstrap admin key, and password hashing made cheap for tests."""
    return ServiceProcess(SERVICES / "auth", env={
        "ETCD_ENDPOINTS": "", "DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'auth.db'}",
        "JWT_SIGNING_KEY_FILE": str(tmp / "jwt.pem"), "NEXUS_ADMIN_API_KEY": admin_key,
        "NEXUS_INTERNAL_TOKEN": internal_token, "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "64", "PASSWORD_HASH_PARALLELISM": "1",
    })  # fmt: skip


def usage_process(tmp: Path, internal_token: str) -> ServiceProcess:
    """The real usage service as a process, not yet started, on SQLite in ``tmp``."""
    return ServiceProcess(SERVICES / "usage", env={
        "ETCD_ENDPOINTS": "", "DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'usage.db'}",
        "NEXUS_INTERNAL_TOKEN": internal_token,
    })  # fmt: skip
