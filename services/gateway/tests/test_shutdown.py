"""Gateway SIGTERM with streams in flight (issue #12, fault 4), as a real process on loopback.

The pre-stop window: ``/readyz`` 503 while the gateway still accepts and proxies. The grace end:
every stream still running gets an SSE error event and a clean end of its chunked body (not a
cut connection), and the log gets one line per stream, not a ``CancelledError`` traceback each.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from nexus_testing import ServiceProcess, UvicornThread, wait_until
from tests.support import meta_json, metadata

pytestmark = pytest.mark.integration

GATEWAY = Path(__file__).resolve().parents[1]
STREAMS = 4
CLEAN_EXIT = (0, -signal.SIGTERM)


def slow_llm() -> Starlette:
    doc = meta_json(metadata("slow", [("POST", "/v1/chat/completions")]))
    doc["endpoints"][0]["streaming"] = True

    async def meta(_: Request) -> JSONResponse:
        return JSONResponse(doc)

    async def chat(_: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            for n in range(600):  # 60 s at most
                yield b"data: " + orjson.dumps({"n": n}) + b"\n\n"
                await asyncio.sleep(0.1)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/metadata", meta), Route("/v1/chat/completions", chat,
                                                                 methods=["POST"])])  # fmt: skip


@dataclass
class Reader:
    url: str
    started: threading.Event = field(default_factory=threading.Event)
    lines: list[str] = field(default_factory=list)
    error: str | None = None

    def run(self) -> None:
        body = {"model": "m", "stream": True, "messages": []}
        try:
            with httpx.stream("POST", self.url, json=body, timeout=30) as resp:
                for line in resp.iter_lines():
                    if line:
                        self.lines.append(line)
                        self.started.set()
        except httpx.HTTPError as exc:  # a cut connection: what must not happen
            self.error = f"{type(exc).__name__}: {exc}"


@pytest.fixture
def upstream() -> Iterator[UvicornThread]:
    with UvicornThread(slow_llm()) as server:
        yield server


def test_sigterm_with_streams_in_flight(upstream: UvicornThread) -> None:
    env = {"ETCD_ENDPOINTS": "", "OLLAMA_BASE_URL": "off", "NEXUS_AUTH_ENABLED": "false",
           "GATEWAY_METRICS_PORT": "0", "SLOW_BASE_URL": upstream.url, "GATEWAY_WORKERS": "1",
           "PRESTOP_DELAY_S": "1", "SHUTDOWN_GRACE_S": "1", "LOG_LEVEL": "INFO"}  # fmt: skip
    gw = ServiceProcess(GATEWAY, env=env).start(wait="/readyz")
    readers = [Reader(f"{gw.url}/v1/chat/completions") for _ in range(STREAMS)]
    threads = [threading.Thread(target=r.run) for r in readers]
    try:
        for thread in threads:
            thread.start()
        for reader in readers:
            assert reader.started.wait(10)
        gw.signal(signal.SIGTERM)
        wait_until(lambda: httpx.get(f"{gw.url}/readyz").status_code == 503, 1.0, "readyz 503")
        assert httpx.get(f"{gw.url}/health").status_code == 200  # the listener still serves
        assert gw.wait(20) in CLEAN_EXIT
    finally:
        gw.stop()
        for thread in threads:
            thread.join(15)
    for reader in readers:
        assert reader.error is None  # the chunked body ended cleanly
        last = orjson.loads(reader.lines[-1].removeprefix("data: "))
        assert last["error"]["code"] == "service_unavailable"
    log = gw.output()
    assert "CancelledError" not in log
    assert "Traceback" not in log
    assert log.count("request ended: shutdown grace over") == STREAMS
