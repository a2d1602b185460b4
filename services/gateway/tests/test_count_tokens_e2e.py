"""``POST /v1/messages/count_tokens`` (Claude Code calls it), with the real anthropic SDK.

No Ollama version serves it (its Anthropic layer lists it as not supported, docs/upstreams.md),
so behind Ollama alone it is a 404 in Anthropic's shape, which the SDK raises as
``NotFoundError``. A ``kind: openai`` upstream that serves it (an
Anthropic-compatible server) names it in its registration's ``paths`` and gets it routed by
the body's ``model``, with the upstream's own ``{"input_tokens": N}`` passed through.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.main import build_app
from nexus_testing import EtcdServer, UvicornThread, wait_for_http, wait_until
from tests.llm_fakes import Gate, ollama
from tests.support import settings

pytestmark = pytest.mark.integration
HI: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hello there"}]
MODEL = "claude-compat-large"


def anthropic_compatible(seen: list[dict[str, Any]]) -> Starlette:
    """An Anthropic-compatible server: ``/v1/models`` and ``/v1/messages/count_tokens``."""

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [
            {"id": MODEL, "object": "model", "created": 1_700_000_000, "owned_by": "compat"}]})

    async def count_tokens(request: Request) -> Response:
        body = orjson.loads(await request.body())
        seen.append({"body": body, "headers": dict(request.headers)})
        if body.get("model") != MODEL:
            error = {"type": "not_found_error", "message": f"model: {body.get('model')}"}
            return JSONResponse({"type": "error", "error": error}, status_code=404)
        words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        return JSONResponse({"input_tokens": words + 3})

    return Starlette(routes=[
        Route("/v1/models", models),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    ])  # fmt: skip


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer().start()
    yield server
    server.stop()
    server.cleanup()


@pytest.fixture(scope="module")
def gw(etcd: EtcdServer) -> Iterator[str]:
    with UvicornThread(ollama(Gate(), version="0.23.1")) as upstream:
        config = settings(ollama_base_url=upstream.url, etcd_endpoints=etcd.endpoint,
                          health_probe_interval_s=0.2)  # fmt: skip
        with UvicornThread(build_app(config)) as gateway:
            wait_for_http(f"{gateway.url}/readyz", timeout_s=15)
            yield gateway.url


@pytest.fixture(scope="module")
def claude(gw: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gw, api_key="sk-client-secret", max_retries=0) as c:
        yield c


def test_behind_ollama_alone_count_tokens_is_a_404_in_anthropics_shape(
    claude: anthropic.Anthropic, gw: str
) -> None:
    with pytest.raises(anthropic.NotFoundError) as raised:
        claude.messages.count_tokens(model="llama3.2", messages=HI)
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert "/v1/messages/count_tokens" in body["error"]["message"]
    assert "127.0.0.1" not in body["error"]["message"]  # never an internal address


def test_an_upstream_that_serves_it_gets_it_by_model(
    etcd: EtcdServer, gw: str, claude: anthropic.Anthropic
) -> None:
    seen: list[dict[str, Any]] = []
    with UvicornThread(anthropic_compatible(seen)) as up:
        key = "/nexus/services/compat/compat-1"
        value = {"name": "compat", "base_url": up.url, "kind": "openai",
                 "paths": ["/v1/messages", "/v1/messages/count_tokens"]}  # fmt: skip
        etcd.put(key, orjson.dumps(value).decode())
        try:
            wait_until(lambda: _models(gw) >= {MODEL}, 10, "the compatible server's model")
            counted = claude.messages.count_tokens(model=MODEL, messages=HI)
            assert counted.input_tokens == 5
            (call,) = seen
            assert call["body"]["messages"] == HI
            assert "sk-client-secret" not in str(call["headers"])  # the client's key stays here
            with pytest.raises(anthropic.NotFoundError):  # Ollama's model: Ollama can't count
                claude.messages.count_tokens(model="llama3.2", messages=HI)
            bad = httpx.post(f"{gw}/v1/messages/count_tokens", timeout=5,
                             content=b'{"model": "x", "messages": [}',
                             headers={"content-type": "application/json"})  # fmt: skip
            assert bad.status_code == 400, bad.text
            assert bad.json()["error"]["type"] == "invalid_request_error"
        finally:
            etcd.delete(key)
        # Its last instance left: 503 (retry later) for ROUTE_GONE_S, not 404 (issue #12).
        def gone() -> bool:
            resp = httpx.post(f"{gw}/v1/messages/count_tokens", timeout=5,
                              json={"model": MODEL, "messages": HI})  # fmt: skip
            return resp.status_code == 503 and resp.json()["error"]["type"] == "overloaded_error"

        wait_until(gone, 10, "503 once its last instance left")


def _models(gw: str) -> set[str]:
    return {m["id"] for m in httpx.get(f"{gw}/v1/models", timeout=5).json()["data"]}
