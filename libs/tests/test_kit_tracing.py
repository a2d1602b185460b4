"""Tracing in the kit: off unless asked, W3C trace context continued, trace ids on log lines."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from kit_app import demo_router
from opentelemetry.trace import SpanKind, StatusCode

from nexus_kit import ServiceSettings, create_app
from nexus_kit.tracing import TRACING, outgoing_headers, trace_id_of, wanted
from nexus_testing.tracing import Spans, capture_spans

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


@pytest.fixture
async def client(settings: ServiceSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, routers=[demo_router()])
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kit") as client:
            yield client


@pytest.fixture
def spans() -> AsyncIterator[Spans]:  # type: ignore[misc]
    with capture_spans() as found:
        yield found


def log_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The events logged: structlog's as dicts, the access line as its finished JSON."""
    found = []
    for record in caplog.records:
        msg = record.msg
        found.append(dict(msg) if isinstance(msg, dict) else json.loads(str(msg)))
    return found


def test_the_environment_decides() -> None:
    assert not wanted({})
    assert wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert not wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})
    assert not wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": " "})


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (TRACEPARENT.encode(), TRACE),
        (f"00-{'0' * 32}-{PARENT}-01".encode(), None),  # all-zero trace id: invalid
        (b"00-nothex-00f067aa0ba902b7-01", None),
        (b"", None),
        (None, None),
    ],
)
def test_trace_id_of_traceparent(header: bytes | None, expected: str | None) -> None:
    assert trace_id_of(header) == expected


async def test_off_by_default_makes_no_spans_and_no_headers(client: httpx.AsyncClient) -> None:
    assert not TRACING.enabled
    assert outgoing_headers() == {}
    resp = await client.get("/v1/items/a")
    assert resp.status_code == 200


async def test_off_the_clients_trace_id_still_reaches_the_log_lines(
    caplog: pytest.LogCaptureFixture, client: httpx.AsyncClient
) -> None:
    resp = await client.post(
        "/v1/items", json={"name": "n", "count": 1},
        headers={"traceparent": TRACEPARENT, "x-request-id": "rid-off"},
    )  # fmt: skip
    assert resp.status_code == 200
    lines = [e for e in log_lines(caplog) if e.get("request_id") == "rid-off"]
    assert {e["event"] for e in lines} == {"created", "request"}
    assert all(e["trace_id"] == TRACE for e in lines)


async def test_off_a_bad_traceparent_logs_no_trace_id(
    caplog: pytest.LogCaptureFixture, client: httpx.AsyncClient
) -> None:
    await client.get("/v1/items/a", headers={"traceparent": "junk", "x-request-id": "rid-bad"})
    lines = [e for e in log_lines(caplog) if e.get("request_id") == "rid-bad"]
    assert lines
    assert all("trace_id" not in e for e in lines)


async def test_server_span_continues_the_clients_trace(
    caplog: pytest.LogCaptureFixture, spans: Spans, client: httpx.AsyncClient
) -> None:
    resp = await client.post(
        "/v1/items", json={"name": "n", "count": 1},
        headers={"traceparent": TRACEPARENT, "tracestate": "vendor=1", "x-request-id": "rid-on"},
    )  # fmt: skip
    assert resp.status_code == 200
    span = spans.one("POST /v1/items")
    assert span.kind is SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == TRACE
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == PARENT
    assert span.parent.is_remote
    assert str(span.context.trace_state.get("vendor")) == "1"
    attrs = dict(span.attributes or {})
    assert attrs["http.route"] == "/v1/items"
    assert attrs["http.response.status_code"] == 200
    assert attrs["nexus.request_id"] == "rid-on"
    lines = [e for e in log_lines(caplog) if e.get("request_id") == "rid-on"]
    assert {e["event"] for e in lines} == {"created", "request"}
    assert all(e["trace_id"] == TRACE for e in lines)


async def test_without_traceparent_a_new_trace_starts(
    spans: Spans, client: httpx.AsyncClient
) -> None:
    resp = await client.get("/v1/items/x")
    assert resp.status_code == 200
    span = spans.one("GET /v1/items/{item_id}")
    assert span.parent is None
    # Inside the request the current span is this one: outgoing calls would carry it.
    forwarded = resp.json()
    assert forwarded["id"] == "x"


async def test_server_errors_mark_the_span(spans: Spans, client: httpx.AsyncClient) -> None:
    resp = await client.get("/v1/boom")
    assert resp.status_code == 500
    span = spans.one("GET /v1/boom")
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["http.response.status_code"] == 500


async def test_client_errors_do_not_mark_the_span(spans: Spans, client: httpx.AsyncClient) -> None:
    resp = await client.get("/v1/items/bad")
    assert resp.status_code == 400
    span = spans.one("GET /v1/items/{item_id}")
    assert span.status.status_code is StatusCode.UNSET


async def test_unmatched_paths_keep_the_method_as_name(
    spans: Spans, client: httpx.AsyncClient
) -> None:
    resp = await client.get("/nowhere")
    assert resp.status_code == 404
    span = spans.one("GET")
    assert dict(span.attributes or {})["url.path"] == "/nowhere"


async def test_probes_and_metrics_make_no_spans(spans: Spans, client: httpx.AsyncClient) -> None:
    for path in ("/health", "/readyz", "/metrics"):
        assert (await client.get(path, headers={"traceparent": TRACEPARENT})).status_code == 200
    assert spans.all() == []
