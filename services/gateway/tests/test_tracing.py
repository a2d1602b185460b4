"""The gateway's spans and trace context, in process (the SDK's in-memory exporter).

Upstreams are real HTTP servers on loopback (``tests.upstream``), so the ``traceparent``
asserted is the one that arrived over the socket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import respx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from app import spans as gateway_spans
from app.auth import Authenticator
from app.state import GatewayState
from nexus_kit.tracing import span
from nexus_testing.tracing import Spans, capture_spans
from tests.support import gateway, metadata, settings
from tests.upstream import DROP, FakeUpstream, Reply, Seen, answer

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{CLIENT_SPAN}-01"
SSE = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'


@pytest.fixture
def spans() -> Iterator[Spans]:
    with capture_spans() as found:
        yield found


@asynccontextmanager
async def through(
    echo: FakeUpstream | None = None, ollama: FakeUpstream | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, GatewayState]]:
    config = settings(
        static_backends={"echo": echo.url} if echo else {},
        ollama_base_url=ollama.url if ollama else "",
    )
    async with gateway(config) as (client, state):
        yield client, state


def echo_upstream() -> FakeUpstream:
    fake = FakeUpstream(metadata("echo", [("POST", "/v1/echo")]))
    fake.route("POST", "/v1/echo", answer(Reply.json({"ok": True})))
    return fake


def ollama_upstream() -> FakeUpstream:
    fake = FakeUpstream()
    fake.route("GET", "/api/tags", answer(Reply.json({"models": [{"name": "llama3:latest"}]})))
    fake.route("GET", "/api/version", answer(Reply.json({"version": "0.5.0"})))
    sse = Reply(200, SSE, [("content-type", "text/event-stream")])
    fake.route("POST", "/v1/chat/completions", answer(sse))
    return fake


def parent_of(seen: Seen) -> tuple[str, str]:
    """(trace id, parent span id) of the traceparent the upstream received."""
    header = seen.header("traceparent")
    assert header is not None, "no traceparent reached the upstream"
    version, trace_id, span_id, flags = header.split("-")
    assert version == "00"
    assert int(flags, 16) & 1, "sampled"
    return trace_id, span_id


def hexid(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def of_kind(spans: Spans, kind: SpanKind) -> ReadableSpan:
    """The one span of ``kind`` of the proxied request (discovery's own spans left out)."""
    (found,) = [s for s in spans.all() if s.kind is kind and "http.route" in (s.attributes or {})]
    return found


async def test_one_trace_from_the_client_through_the_gateway_to_the_upstream(
    spans: Spans,
) -> None:
    async with echo_upstream() as echo, through(echo) as (client, _):
        headers = {"traceparent": TRACEPARENT, "tracestate": "acme=7"}
        resp = await client.post("/v1/echo", json={"a": 1}, headers=headers)
        assert resp.status_code == 200
        (seen,) = echo.calls("POST", "/v1/echo")
    server, proxy = of_kind(spans, SpanKind.SERVER), of_kind(spans, SpanKind.CLIENT)
    assert server.name == proxy.name == "POST /v1/echo"
    assert server.parent is not None
    assert hexid(server.parent.span_id, 16) == CLIENT_SPAN
    assert proxy.parent is not None
    assert proxy.parent.span_id == server.context.span_id
    assert {hexid(s.context.trace_id, 32) for s in (server, proxy)} == {TRACE}
    # The upstream continues the proxy span, not the client's: one chain, no gaps.
    assert parent_of(seen) == (TRACE, hexid(proxy.context.span_id, 16))
    assert seen.header("tracestate") == "acme=7"
    assert sum(1 for name, _ in seen.headers if name == b"traceparent") == 1
    attrs = dict(proxy.attributes or {})
    assert attrs["http.route"] == "/v1/echo"
    assert attrs["nexus.service"] == "echo"
    assert attrs["nexus.instance"]
    assert attrs["http.response.status_code"] == 200
    assert "gen_ai.request.model" not in attrs  # no model named, no GenAI attributes
    assert proxy.status.status_code is StatusCode.UNSET


async def test_a_new_trace_starts_when_the_client_sends_none(spans: Spans) -> None:
    async with echo_upstream() as echo, through(echo) as (client, _):
        assert (await client.post("/v1/echo", json={})).status_code == 200
        (seen,) = echo.calls("POST", "/v1/echo")
    server = of_kind(spans, SpanKind.SERVER)
    assert server.parent is None
    assert parent_of(seen)[0] == hexid(server.context.trace_id, 32)


async def test_an_ollama_stream_gets_genai_attributes_and_a_first_token_event(
    spans: Spans,
) -> None:
    body: dict[str, Any] = {"model": "llama3", "messages": [], "stream": True}
    async with ollama_upstream() as ollama, through(ollama=ollama) as (client, _):
        resp = await client.post(
            "/v1/chat/completions", json=body, headers={"traceparent": TRACEPARENT}
        )
        assert resp.status_code == 200
        assert resp.content == SSE
        (seen,) = ollama.calls("POST", "/v1/chat/completions")
    proxy = spans.one("chat llama3")
    assert proxy.kind is SpanKind.CLIENT
    assert parent_of(seen) == (TRACE, hexid(proxy.context.span_id, 16))
    attrs = dict(proxy.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "llama3"
    assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "ollama"
    assert attrs["nexus.upstream.kind"] == "ollama"
    (event,) = [e for e in proxy.events if e.name == "gen_ai.first_token"]
    ttft = dict(event.attributes or {})["gen_ai.server.time_to_first_token"]
    assert isinstance(ttft, float)
    assert ttft >= 0


async def test_an_upstream_failure_marks_the_span(spans: Spans) -> None:
    async with echo_upstream() as echo, through(echo) as (client, _):
        echo.route("POST", "/v1/echo", answer(DROP))  # type: ignore[arg-type]
        resp = await client.post("/v1/echo", json={})
        assert resp.status_code == 502
    proxy = of_kind(spans, SpanKind.CLIENT)
    assert proxy.status.status_code is StatusCode.ERROR
    assert dict(proxy.attributes or {})["nexus.client_status"] == 502
    assert of_kind(spans, SpanKind.SERVER).status.status_code is StatusCode.ERROR


async def test_the_usage_hook_adds_token_counts(spans: Spans) -> None:
    from app.routing import Route

    route = Route("POST", "/v1/chat/completions", "chat")
    from app.exchange import RequestHead

    head = RequestHead([("traceparent", TRACEPARENT)], b"", None, "none", [])
    span = gateway_spans.ProxySpan(route, "m", head)
    span.usage(input_tokens=12, output_tokens=34, response_model="m-2025")
    span.end(200)
    attrs = dict(spans.one("chat m").attributes or {})
    assert attrs["gen_ai.usage.input_tokens"] == 12
    assert attrs["gen_ai.usage.output_tokens"] == 34
    assert attrs["gen_ai.response.model"] == "m-2025"
    assert [n for n, _ in head.forward] == ["traceparent"]  # replaced, not duplicated
    assert head.forward[0][1] != TRACEPARENT


async def test_off_the_clients_trace_headers_pass_through_unchanged() -> None:
    async with echo_upstream() as echo, through(echo) as (client, _):
        headers = {"traceparent": TRACEPARENT, "tracestate": "acme=7"}
        assert (await client.post("/v1/echo", json={}, headers=headers)).status_code == 200
        (seen,) = echo.calls("POST", "/v1/echo")
    assert seen.header("traceparent") == TRACEPARENT
    assert seen.header("tracestate") == "acme=7"
    assert gateway_spans.current() is None


async def test_metadata_fetches_are_spans_that_carry_their_traceparent(spans: Spans) -> None:
    async with echo_upstream() as echo, through(echo):
        pass
    fetch = spans.one("gateway.discovery.fetch_metadata")
    assert fetch.kind is SpanKind.CLIENT
    assert dict(fetch.attributes or {})["nexus.service"] == "echo"
    seen = echo.calls("GET", "/v1/metadata")[0]
    assert parent_of(seen) == (hexid(fetch.context.trace_id, 32), hexid(fetch.context.span_id, 16))


@respx.mock
async def test_auth_introspection_is_a_child_span_and_carries_its_traceparent(
    spans: Spans,
) -> None:
    route = respx.post("http://auth.test/v1/auth/introspect").respond(
        json={"active": True, "subject": "usr_1", "role": "user", "key_id": "key_1"}
    )
    async with httpx.AsyncClient() as http:
        auth = Authenticator(lambda: http, lambda: "http://auth.test", "internal-token-123456")
        with span("request") as parent:
            await auth.authenticate(b"Bearer nx-" + b"a" * 40)
    introspect = spans.one("gateway.auth.introspect")
    assert introspect.parent is not None
    assert introspect.parent.span_id == parent.get_span_context().span_id
    sent = route.calls.last.request.headers["traceparent"]
    assert sent.split("-")[2] == hexid(introspect.context.span_id, 16)


async def test_a_kind_openai_upstream_gets_the_proxy_spans_traceparent(spans: Spans) -> None:
    fake = FakeUpstream()
    models = {"object": "list", "data": [{"id": "qwen", "object": "model", "owned_by": "vllm"}]}
    fake.route("GET", "/v1/models", answer(Reply.json(models)))
    fake.route("GET", "/health", answer(Reply(200)))
    fake.route("POST", "/v1/chat/completions", answer(Reply.json({"id": "c", "choices": []})))
    async with fake, gateway(settings(nexus_openai_upstreams=f"vllm={fake.url}")) as (client, _):
        body = {"model": "qwen", "messages": []}
        resp = await client.post("/v1/chat/completions", json=body,
                                 headers={"traceparent": TRACEPARENT})  # fmt: skip
        assert resp.status_code == 200, resp.text
        (seen,) = fake.calls("POST", "/v1/chat/completions")
    proxy = spans.one("chat qwen")
    assert parent_of(seen) == (TRACE, hexid(proxy.context.span_id, 16))
    attrs = dict(proxy.attributes or {})
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["nexus.upstream.kind"] == "openai"
