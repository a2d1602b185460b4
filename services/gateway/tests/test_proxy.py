"""The proxy against fake upstreams on loopback: pass-through, failover, and every error.

The upstreams are ``tests.upstream.FakeUpstream``: real HTTP/1.1 servers in the test's loop,
so what is asserted is what arrived over the socket (the proxy's aiohttp client is not
mockable with respx, and should not be: connection handling is part of what is tested).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from app.discovery import Snapshot
from app.state import GatewayState
from nexus_kit import CheckResult
from nexus_testing import free_port
from tests.support import assert_openai_schema, gateway, metadata, settings
from tests.upstream import DROP, FakeUpstream, Reply, Seen, answer, in_turn

ECHO_ENDPOINTS = [("POST", "/v1/echo"), ("GET", "/v1/items/{id}"), ("POST", "/v1/upload"),
                  ("POST", "/v1/stream")]  # fmt: skip


def echo_upstream() -> FakeUpstream:
    return FakeUpstream(metadata("echo", ECHO_ENDPOINTS))


def ollama_upstream() -> FakeUpstream:
    fake = FakeUpstream()
    tags = [{"name": "llama3:latest"}, {"name": "ghost:latest"}]
    fake.route("GET", "/api/tags", answer(Reply.json({"models": tags})))
    fake.route("GET", "/api/version", answer(Reply.json({"version": "0.5.0"})))
    return fake


@asynccontextmanager
async def proxied(
    *echoes: FakeUpstream, ollama: FakeUpstream | None = None, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, GatewayState]]:
    backends = {"echo": ",".join(e.url for e in echoes)} if echoes else {}
    config = settings(static_backends=backends, ollama_base_url=ollama.url if ollama else "",
                      **overrides)  # fmt: skip
    async with gateway(config) as (client, state):
        yield client, state


def assert_error(resp: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert_openai_schema("ErrorResponse", body)
    assert body["error"]["code"] == code
    return body


# -- passing through --------------------------------------------------------------------


async def test_body_bytes_method_path_and_query_pass_through() -> None:
    async with echo_upstream() as echo, proxied(echo) as (client, _):
        reply = Reply(201, b'{"ok" :true}', [("content-type", "application/json"), ("x-up", "1")])
        echo.route("POST", "/v1/echo", answer(reply))
        raw = b'{ "b": 1,\n  "a":[2, 3] }'
        resp = await client.post("/v1/echo?x=1&y=%2F", content=raw,
                                 headers={"content-type": "application/json"})  # fmt: skip
        assert (resp.status_code, resp.content, resp.headers["x-up"]) == (201, b'{"ok" :true}', "1")
        (sent,) = echo.calls("POST", "/v1/echo")
        assert sent.body == raw
        assert sent.target == b"/v1/echo?x=1&y=%2F"


async def test_hop_by_hop_headers_are_dropped_both_ways_and_the_request_id_travels() -> None:
    async with echo_upstream() as echo, proxied(echo) as (client, _):
        echo.route("POST", "/v1/echo", answer(Reply.json({}, headers=[
            ("keep-alive", "timeout=5"), ("x-request-id", "upstream-own"), ("server", "upstream"),
            ("x-kept", "yes")])))  # fmt: skip
        resp = await client.post(
            "/v1/echo", json={},
            headers={"x-request-id": "req-123", "te": "trailers", "keep-alive": "300",
                     "connection": "keep-alive, x-private", "x-private": "1", "x-public": "2"},
        )  # fmt: skip
        (sent,) = echo.calls("POST", "/v1/echo")
        assert [v for k, v in sent.headers if k == b"x-request-id"] == [b"req-123"]
        assert sent.header("host") == echo.url.removeprefix("http://")
        assert sent.header("x-public") == "2"
        for dropped in ("te", "keep-alive", "x-private"):
            assert sent.header(dropped) is None
        assert resp.headers.get_list("x-request-id") == ["req-123"]
        assert "keep-alive" not in resp.headers
        assert resp.headers["x-kept"] == "yes"
        assert "upstream" not in resp.headers.get_list("server")


async def test_the_client_adds_no_headers_of_its_own() -> None:
    """No cookie jar, no Accept-Encoding (bytes pass through), no client User-Agent or type."""
    async with echo_upstream() as echo, proxied(echo) as (client, _):
        set_cookie = [("content-type", "application/json"), ("set-cookie", "session=secret")]
        echo.route("POST", "/v1/echo", answer(Reply(200, b"{}", set_cookie)))
        raw = httpx.Request("POST", "http://gateway/v1/echo", content=b'{"a": 1}')
        raw.headers.pop("accept-encoding", None)
        raw.headers.pop("user-agent", None)
        for _ in range(2):
            assert (await client.send(raw)).headers["set-cookie"] == "session=secret"
        first, second = echo.calls("POST", "/v1/echo")
        for seen in (first, second):
            names = {k for k, _ in seen.headers}
            assert not names & {b"accept-encoding", b"user-agent", b"content-type"}, names
        assert second.header("cookie") is None  # one caller's cookie never reaches another


async def test_a_generated_request_id_is_forwarded() -> None:
    async with echo_upstream() as echo, proxied(echo) as (client, _):
        echo.route("POST", "/v1/echo", answer(Reply.json({})))
        resp = await client.post("/v1/echo", json={}, headers={"x-request-id": "bad id!"})
        (sent,) = echo.calls("POST", "/v1/echo")
        assert sent.header("x-request-id") == resp.headers["x-request-id"]
        assert resp.headers["x-request-id"] != "bad id!"


@pytest.mark.parametrize("status", [400, 401, 422, 429, 500])
async def test_upstream_error_responses_pass_through_unchanged(status: int) -> None:
    body = b'{"detail": "the upstream said no"}'
    async with echo_upstream() as echo, proxied(echo) as (client, _):
        echo.route("POST", "/v1/echo", answer(Reply(status, body, [("x-why", "because")])))
        resp = await client.post("/v1/echo", json={})
        assert (resp.status_code, resp.content, resp.headers["x-why"]) == (status, body, "because")


async def test_param_paths_and_aliases_forward_the_real_path() -> None:
    async with echo_upstream() as echo, proxied(echo) as (client, _):
        echo.route("GET", "/v1/items/a%20b", answer(Reply.json({"id": "a b"})))
        assert (await client.get("/v1/items/a%20b")).json() == {"id": "a b"}
        assert (await client.get("/services/echo/v1/items/a%20b")).json() == {"id": "a b"}
        assert len(echo.calls("GET", "/v1/items/a%20b")) == 2


async def test_sse_responses_get_anti_buffering_headers_and_identical_bytes() -> None:
    events = b'data: {"a": 1}\n\ndata: [DONE]\n\n'
    async with echo_upstream() as echo, proxied(echo) as (client, _):
        sse = [("content-type", "text/event-stream"), ("cache-control", "public")]
        echo.route("POST", "/v1/stream", answer(Reply(200, events, sse)))
        resp = await client.post("/v1/stream", json={"stream": True})
        assert resp.content == events
        assert resp.headers["cache-control"] == "no-cache"
        assert resp.headers["x-accel-buffering"] == "no"


async def test_uploads_are_streamed_with_their_framing() -> None:
    async with echo_upstream() as echo, proxied(echo) as (client, _):
        echo.route("POST", "/v1/upload", answer(Reply.json({"ok": True})))
        files = {"file": ("a.wav", b"RIFF" + bytes(5000), "audio/wav")}
        resp = await client.post("/v1/upload", files=files, data={"model": "x"})
        assert resp.status_code == 200
        (sent,) = echo.calls("POST", "/v1/upload")
        assert sent.header("content-length") == str(len(sent.body))
        assert sent.header("transfer-encoding") is None
        assert (sent.header("content-type") or "").startswith("multipart/form-data")
        assert b"RIFF" in sent.body


async def test_a_form_typed_body_that_is_not_json_is_forwarded() -> None:
    async with echo_upstream() as echo, proxied(echo) as (client, _):
        echo.route("POST", "/v1/echo", answer(Reply.json({"ok": True})))
        resp = await client.post("/v1/echo", data={"message": "hi"})
        assert resp.status_code == 200


# -- errors -----------------------------------------------------------------------------


async def test_unknown_path_is_404() -> None:
    async with echo_upstream() as echo, proxied(echo) as (client, _):
        body = assert_error(await client.post("/v1/nothing", json={}), 404, "unknown_url")
        assert "POST /v1/nothing" in body["error"]["message"]


async def test_known_path_wrong_method_is_405() -> None:
    async with echo_upstream() as echo, proxied(echo) as (client, _):
        resp = await client.get("/v1/echo")
        assert_error(resp, 405, "method_not_allowed")
        assert resp.headers["allow"] == "POST"


async def test_unknown_model_is_404_model_not_found() -> None:
    async with ollama_upstream() as ollama, proxied(ollama=ollama) as (client, _):
        resp = await client.post("/v1/chat/completions", json={"model": "gpt-9", "messages": []})
        body = assert_error(resp, 404, "model_not_found")
        assert body["error"]["param"] == "model"


async def test_ollama_own_404_for_a_model_becomes_model_not_found() -> None:
    async with ollama_upstream() as ollama, proxied(ollama=ollama) as (client, _):
        error = {"error": {"message": 'model "ghost" not found, try pulling it first',
                           "type": "not_found_error", "param": None, "code": None}}  # fmt: skip
        ollama.route("POST", "/v1/chat/completions", answer(Reply.json(error, 404)))
        resp = await client.post("/v1/chat/completions", json={"model": "ghost", "messages": []})
        assert_error(resp, 404, "model_not_found")


async def test_no_ready_instance_is_503_with_retry_after() -> None:
    async with echo_upstream() as echo, proxied(echo, eject_s=7) as (client, state):
        (instance,) = state.table.snapshot.instances
        state.upstreams.probed(instance.key, CheckResult(False, "readyz 503"))
        resp = await client.post("/v1/echo", json={})
        assert_error(resp, 503, "service_unavailable")
        assert resp.headers["retry-after"] == "7"
        nothing = await client.post("/v1/images/generations", json={"prompt": "a cat"})
        assert_error(nothing, 503, "service_unavailable")


async def test_a_refused_connection_is_502() -> None:
    async with echo_upstream() as echo, proxied(echo) as (client, _):
        await echo.stop_listening()  # discovered (metadata fetched), now refusing
        body = assert_error(await client.post("/v1/echo", json={}), 502, "bad_gateway")
        assert "echo" in body["error"]["message"]


async def test_connect_errors_fail_over_and_eject_after_repeated_failures() -> None:
    async with (
        echo_upstream() as a, echo_upstream() as b,
        proxied(a, b, eject_after_failures=2) as (client, state),
    ):  # fmt: skip
        b.route("POST", "/v1/echo", answer(Reply.json({"from": "b"})))
        await a.stop_listening()
        for _ in range(6):
            resp = await client.post("/v1/echo", json={})
            assert resp.json() == {"from": "b"}
        keys = {i.base_url: i.key for i in state.table.snapshot.instances}
        assert state.upstreams.states[keys[a.url]].failures == 2  # then ejected: no more tries
        assert len(b.calls("POST", "/v1/echo")) == 6
        states = {i.base_url: state.upstreams.describe(i) for i in state.table.snapshot.instances}
        assert states == {a.url: "ejected", b.url: "ready"}


async def slow(_: Seen) -> Reply:
    await asyncio.sleep(30)  # cancelled when the fake closes
    return Reply()


async def test_a_first_byte_timeout_is_504() -> None:
    async with echo_upstream() as echo, proxied(echo, upstream_first_byte_timeout_s=0.1) as (
        client, _,
    ):  # fmt: skip
        echo.route("POST", "/v1/echo", slow)
        assert_error(await client.post("/v1/echo", json={}), 504, "upstream_timeout")


async def test_timeouts_on_the_only_instance_never_turn_into_503() -> None:
    """Saturated: every request times out. The only instance is not ejected (503 for
    everyone); each request gets its 504, and the first quick answer is served."""
    async with echo_upstream() as echo, proxied(
        echo, upstream_first_byte_timeout_s=0.1, eject_after_failures=2
    ) as (client, state):
        echo.route("POST", "/v1/echo", slow)
        for _ in range(4):
            assert_error(await client.post("/v1/echo", json={}), 504, "upstream_timeout")
        (instance,) = state.table.snapshot.instances
        assert state.upstreams.describe(instance) == "ready"
        echo.route("POST", "/v1/echo", answer(Reply.json({"ok": True})))
        assert (await client.post("/v1/echo", json={})).json() == {"ok": True}


async def test_the_total_timeout_is_504() -> None:
    async with echo_upstream() as echo, proxied(echo, upstream_total_timeout_s=0.05) as (
        client, _,
    ):  # fmt: skip
        echo.route("POST", "/v1/echo", slow)
        assert_error(await client.post("/v1/echo", json={}), 504, "upstream_timeout")


@pytest.mark.parametrize("raw", [b'{"model": "x",', b"not json", b"[1, 2]"])
async def test_malformed_json_is_400(raw: bytes) -> None:
    async with ollama_upstream() as ollama, proxied(ollama=ollama) as (client, _):
        resp = await client.post("/v1/chat/completions", content=raw,
                                 headers={"content-type": "application/json"})  # fmt: skip
        assert_error(resp, 400, "invalid_json")


async def test_a_body_over_the_limit_is_413() -> None:
    async with echo_upstream() as echo, proxied(echo, max_json_body_bytes=1024) as (client, _):
        resp = await client.post("/v1/echo", json={"message": "x" * 2000})
        assert_error(resp, 413, "payload_too_large")


async def test_a_stale_pooled_connection_is_retried_once() -> None:
    async with echo_upstream() as echo, proxied(echo) as (client, _):
        echo.route("POST", "/v1/echo", in_turn(DROP, Reply.json({"ok": True})))
        assert (await client.post("/v1/echo", json={})).json() == {"ok": True}
        echo.route("POST", "/v1/echo", in_turn(DROP, DROP, Reply()))
        assert_error(await client.post("/v1/echo", json={}), 502, "bad_gateway")
        assert len(echo.calls("POST", "/v1/echo")) == 4  # two tries each, never a third


async def test_an_idempotent_request_is_retried_once_too() -> None:
    """aiohttp retries GET itself; the proxy must not add a second retry on top."""
    async with echo_upstream() as echo, proxied(echo) as (client, _):
        echo.route("GET", "/v1/items/1", in_turn(DROP, Reply.json({"id": "1"})))
        assert (await client.get("/v1/items/1")).json() == {"id": "1"}
        echo.route("GET", "/v1/items/1", in_turn(DROP, DROP, Reply()))
        assert_error(await client.get("/v1/items/1"), 502, "bad_gateway")
        assert len(echo.calls("GET", "/v1/items/1")) == 4


# -- the table swap ---------------------------------------------------------------------


async def test_a_request_keeps_the_table_it_started_with() -> None:
    async with echo_upstream() as echo, proxied(echo) as (client, state):

        async def swap_meanwhile(_: Seen) -> Reply:
            state.apply(Snapshot(99, (), True))  # the instance left while we were busy
            return Reply.json({"done": True})

        echo.route("POST", "/v1/echo", swap_meanwhile)
        assert (await client.post("/v1/echo", json={})).json() == {"done": True}
        assert state.table.revision == 99
        # A path served a moment ago is a vanished service, not a typo (departed.py).
        gone = await client.post("/v1/echo", json={})
        assert_error(gone, 503, "service_unavailable")
        assert gone.headers["retry-after"]


# -- metrics ----------------------------------------------------------------------------


async def test_metrics_are_served_on_their_own_port() -> None:
    port = free_port()
    async with echo_upstream() as echo, proxied(
        echo, gateway_metrics_port=port, gateway_metrics_host="127.0.0.1"
    ) as (client, _):
        echo.route("POST", "/v1/echo", answer(Reply.json({})))
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


async def test_a_taken_metrics_port_stops_the_start_with_a_reason() -> None:
    """One process per metrics port (no uvicorn --workers): a clash says what to do instead."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = settings(gateway_metrics_port=port, gateway_metrics_host="127.0.0.1")
        with pytest.raises(RuntimeError, match=r"GATEWAY_METRICS_PORT .* replicas"):
            async with gateway(config):
                pass
