"""The proxy against mocked upstreams (respx): pass-through, failover, and every error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import respx

from app.discovery import Snapshot
from app.state import GatewayState
from nexus_kit import CheckResult
from nexus_testing import free_port
from tests.support import assert_openai_schema, gateway, meta_json, metadata, settings

ECHO = "http://echo.test"
OLLAMA = "http://ollama.test"
ECHO_ENDPOINTS = [("POST", "/v1/echo"), ("GET", "/v1/items/{id}"), ("POST", "/v1/upload"),
                  ("POST", "/v1/stream")]  # fmt: skip


def mock_echo(mock: respx.MockRouter, *bases: str) -> None:
    for base in bases or (ECHO,):
        mock.get(f"{base}/v1/metadata").respond(json=meta_json(metadata("echo", ECHO_ENDPOINTS)))


def mock_ollama(mock: respx.MockRouter) -> None:
    tags = [{"name": "llama3:latest"}, {"name": "ghost:latest"}]
    mock.get(f"{OLLAMA}/api/tags").respond(json={"models": tags})
    mock.get(f"{OLLAMA}/api/version").respond(json={"version": "0.5.0"})


@asynccontextmanager
async def proxied(
    echo: str = ECHO, ollama: str = "", **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, GatewayState, respx.MockRouter]]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        mock_echo(mock, *[u.strip() for u in echo.split(",") if u.strip()])
        if ollama:
            mock_ollama(mock)
        config = settings(static_backends={"echo": echo} if echo else {}, ollama_base_url=ollama,
                          **overrides)  # fmt: skip
        async with gateway(config) as (client, state):
            yield client, state, mock


def assert_error(resp: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert_openai_schema("ErrorResponse", body)
    assert body["error"]["code"] == code
    return body


# -- passing through --------------------------------------------------------------------


async def test_body_bytes_method_path_and_query_pass_through() -> None:
    async with proxied() as (client, _, mock):
        upstream = mock.post(f"{ECHO}/v1/echo").respond(
            201, content=b'{"ok" :true}', headers={"content-type": "application/json", "x-up": "1"}
        )
        raw = b'{ "b": 1,\n  "a":[2, 3] }'
        resp = await client.post("/v1/echo?x=1&y=%2F", content=raw,
                                 headers={"content-type": "application/json"})  # fmt: skip
        assert (resp.status_code, resp.content, resp.headers["x-up"]) == (201, b'{"ok" :true}', "1")
        sent = upstream.calls.last.request
        assert sent.content == raw
        assert sent.url.raw_path == b"/v1/echo?x=1&y=%2F"


async def test_hop_by_hop_headers_are_dropped_both_ways_and_the_request_id_travels() -> None:
    async with proxied() as (client, _, mock):
        upstream = mock.post(f"{ECHO}/v1/echo").respond(
            200, json={}, headers={"keep-alive": "timeout=5", "x-request-id": "upstream-own",
                                   "server": "upstream", "x-kept": "yes"},
        )  # fmt: skip
        resp = await client.post(
            "/v1/echo", json={},
            headers={"x-request-id": "req-123", "te": "trailers", "keep-alive": "300",
                     "connection": "keep-alive, x-private", "x-private": "1", "x-public": "2"},
        )  # fmt: skip
        sent = upstream.calls.last.request.headers
        assert sent["x-request-id"] == "req-123"
        assert sent["host"] == "echo.test"
        assert sent["x-public"] == "2"
        for dropped in ("te", "keep-alive", "x-private"):
            assert dropped not in sent
        assert resp.headers.get_list("x-request-id") == ["req-123"]
        assert "keep-alive" not in resp.headers
        assert resp.headers["x-kept"] == "yes"
        assert "upstream" not in resp.headers.get_list("server")


async def test_a_generated_request_id_is_forwarded() -> None:
    async with proxied() as (client, _, mock):
        upstream = mock.post(f"{ECHO}/v1/echo").respond(json={})
        resp = await client.post("/v1/echo", json={}, headers={"x-request-id": "bad id!"})
        assert upstream.calls.last.request.headers["x-request-id"] == resp.headers["x-request-id"]
        assert resp.headers["x-request-id"] != "bad id!"


@pytest.mark.parametrize("status", [400, 401, 422, 429, 500])
async def test_upstream_error_responses_pass_through_unchanged(status: int) -> None:
    body = b'{"detail": "the upstream said no"}'
    async with proxied() as (client, _, mock):
        mock.post(f"{ECHO}/v1/echo").respond(status, content=body, headers={"x-why": "because"})
        resp = await client.post("/v1/echo", json={})
        assert (resp.status_code, resp.content, resp.headers["x-why"]) == (status, body, "because")


async def test_param_paths_and_aliases_forward_the_real_path() -> None:
    async with proxied() as (client, _, mock):
        item = mock.get(f"{ECHO}/v1/items/a%20b").respond(json={"id": "a b"})
        assert (await client.get("/v1/items/a%20b")).json() == {"id": "a b"}
        assert (await client.get("/services/echo/v1/items/a%20b")).json() == {"id": "a b"}
        assert item.call_count == 2


async def test_sse_responses_get_anti_buffering_headers_and_identical_bytes() -> None:
    events = b'data: {"a": 1}\n\ndata: [DONE]\n\n'
    async with proxied() as (client, _, mock):
        mock.post(f"{ECHO}/v1/stream").respond(
            content=events, headers={"content-type": "text/event-stream", "cache-control": "public"}
        )
        resp = await client.post("/v1/stream", json={"stream": True})
        assert resp.content == events
        assert resp.headers["cache-control"] == "no-cache"
        assert resp.headers["x-accel-buffering"] == "no"


async def test_uploads_are_streamed_with_their_framing() -> None:
    async with proxied() as (client, _, mock):
        upstream = mock.post(f"{ECHO}/v1/upload").respond(json={"ok": True})
        files = {"file": ("a.wav", b"RIFF" + bytes(5000), "audio/wav")}
        resp = await client.post("/v1/upload", files=files, data={"model": "x"})
        assert resp.status_code == 200
        sent = upstream.calls.last.request
        assert sent.headers["content-length"] == str(len(sent.content))
        assert b"RIFF" in sent.content


async def test_a_form_typed_body_that_is_not_json_is_forwarded() -> None:
    async with proxied() as (client, _, mock):
        mock.post(f"{ECHO}/v1/echo").respond(json={"ok": True})
        resp = await client.post("/v1/echo", data={"message": "hi"})
        assert resp.status_code == 200


# -- errors -----------------------------------------------------------------------------


async def test_unknown_path_is_404() -> None:
    async with proxied() as (client, _, _):
        body = assert_error(await client.post("/v1/nothing", json={}), 404, "unknown_url")
        assert "POST /v1/nothing" in body["error"]["message"]


async def test_known_path_wrong_method_is_405() -> None:
    async with proxied() as (client, _, _):
        resp = await client.get("/v1/echo")
        assert_error(resp, 405, "method_not_allowed")
        assert resp.headers["allow"] == "POST"


async def test_unknown_model_is_404_model_not_found() -> None:
    async with proxied(ollama=OLLAMA) as (client, _, _):
        resp = await client.post("/v1/chat/completions", json={"model": "gpt-9", "messages": []})
        body = assert_error(resp, 404, "model_not_found")
        assert body["error"]["param"] == "model"


async def test_ollama_own_404_for_a_model_becomes_model_not_found() -> None:
    async with proxied(ollama=OLLAMA) as (client, _, mock):
        error = {"error": {"message": 'model "ghost" not found, try pulling it first',
                           "type": "not_found_error", "param": None, "code": None}}  # fmt: skip
        mock.post(f"{OLLAMA}/v1/chat/completions").respond(404, json=error)
        resp = await client.post("/v1/chat/completions", json={"model": "ghost", "messages": []})
        assert_error(resp, 404, "model_not_found")


async def test_no_ready_instance_is_503_with_retry_after() -> None:
    async with proxied(eject_s=7) as (client, state, _):
        (echo,) = state.table.snapshot.instances
        state.upstreams.probed(echo.key, CheckResult(False, "readyz 503"))
        resp = await client.post("/v1/echo", json={})
        assert_error(resp, 503, "service_unavailable")
        assert resp.headers["retry-after"] == "7"
        nothing = await client.post("/v1/images/generations", json={"prompt": "a cat"})
        assert_error(nothing, 503, "service_unavailable")


async def test_a_refused_connection_is_502() -> None:
    async with proxied() as (client, _, mock):
        mock.post(f"{ECHO}/v1/echo").mock(side_effect=httpx.ConnectError("refused"))
        body = assert_error(await client.post("/v1/echo", json={}), 502, "bad_gateway")
        assert "echo" in body["error"]["message"]


async def test_connect_errors_fail_over_and_eject_after_repeated_failures() -> None:
    a, b = "http://a.test", "http://b.test"
    async with proxied(echo=f"{a},{b}", eject_after_failures=2) as (client, state, mock):
        dead = mock.post(f"{a}/v1/echo").mock(side_effect=httpx.ConnectError("refused"))
        alive = mock.post(f"{b}/v1/echo").respond(json={"from": "b"})
        for _ in range(6):
            resp = await client.post("/v1/echo", json={})
            assert resp.json() == {"from": "b"}
        assert dead.call_count == 2  # then ejected: no more tries
        assert alive.call_count == 6
        states = {i.base_url: state.upstreams.describe(i) for i in state.table.snapshot.instances}
        assert states == {a: "ejected", b: "ready"}


async def test_a_first_byte_timeout_is_504() -> None:
    async with proxied() as (client, _, mock):
        mock.post(f"{ECHO}/v1/echo").mock(side_effect=httpx.ReadTimeout("slow"))
        assert_error(await client.post("/v1/echo", json={}), 504, "upstream_timeout")


async def test_the_total_timeout_is_504() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    async with proxied(upstream_total_timeout_s=0.05) as (client, _, mock):
        mock.post(f"{ECHO}/v1/echo").mock(side_effect=slow)
        assert_error(await client.post("/v1/echo", json={}), 504, "upstream_timeout")


@pytest.mark.parametrize("raw", [b'{"model": "x",', b"not json", b"[1, 2]"])
async def test_malformed_json_is_400(raw: bytes) -> None:
    async with proxied(ollama=OLLAMA) as (client, _, _):
        resp = await client.post("/v1/chat/completions", content=raw,
                                 headers={"content-type": "application/json"})  # fmt: skip
        assert_error(resp, 400, "invalid_json")


async def test_a_body_over_the_limit_is_413() -> None:
    async with proxied(max_json_body_bytes=1024) as (client, _, _):
        resp = await client.post("/v1/echo", json={"message": "x" * 2000})
        assert_error(resp, 413, "payload_too_large")


async def test_a_stale_pooled_connection_is_retried_once() -> None:
    stale = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    async with proxied() as (client, _, mock):
        route = mock.post(f"{ECHO}/v1/echo")
        route.side_effect = [stale, httpx.Response(200, json={"ok": True})]
        assert (await client.post("/v1/echo", json={})).json() == {"ok": True}
        route.side_effect = [stale, stale, httpx.Response(200)]
        assert_error(await client.post("/v1/echo", json={}), 502, "bad_gateway")


# -- the table swap ---------------------------------------------------------------------


async def test_a_request_keeps_the_table_it_started_with() -> None:
    async with proxied() as (client, state, mock):

        async def swap_meanwhile(request: httpx.Request) -> httpx.Response:
            state.apply(Snapshot(99, (), True))  # the instance left while we were busy
            return httpx.Response(200, json={"done": True})

        mock.post(f"{ECHO}/v1/echo").mock(side_effect=swap_meanwhile)
        assert (await client.post("/v1/echo", json={})).json() == {"done": True}
        assert state.table.revision == 99
        assert_error(await client.post("/v1/echo", json={}), 404, "unknown_url")


# -- metrics ----------------------------------------------------------------------------


async def test_metrics_are_served_on_their_own_port() -> None:
    port = free_port()
    async with proxied(gateway_metrics_port=port, gateway_metrics_host="127.0.0.1") as (
        client, _, mock,
    ):  # fmt: skip
        mock.route(host="127.0.0.1").pass_through()
        mock.post(f"{ECHO}/v1/echo").respond(json={})
        await client.post("/v1/echo", json={})
        await client.post("/v1/nope", json={})
        async with httpx.AsyncClient() as scraper:
            text = (await scraper.get(f"http://127.0.0.1:{port}/metrics")).text
    for line in (
        'nexus_gateway_requests_total{route="/v1/echo",status="200"} 1.0',
        'nexus_gateway_requests_total{route="<unmatched>",status="404"} 1.0',
        'nexus_gateway_upstream_duration_seconds_count{upstream="echo"} 1.0',
        'nexus_gateway_upstream_healthy{instance="echo-env-0",service="echo"} 1.0',
        'nexus_gateway_discovery_events_total{event="metadata_ok"}',
        "nexus_gateway_requests_in_flight 0.0",
        "nexus_gateway_routes ",
        'nexus_gateway_request_duration_seconds_bucket{le="+Inf",route="/v1/echo"} 1.0',
        'nexus_http_requests_total{method="POST",route="/v1/echo",status="200"} 1.0',
    ):
        assert line in text, line
