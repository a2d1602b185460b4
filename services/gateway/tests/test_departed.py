"""A path whose last instance left is a vanished service, not a typo (issue #12, faults 2 and 6).

Before: the route vanished with its last instance, so ``POST /v1/auth/token`` after auth's lease
expired answered 401 "Missing bearer token" (the public flag went with the route) and any other
path 404 ``unknown_url``. Now it answers 503 ``service_unavailable`` + ``Retry-After``, public
flag kept, for ``ROUTE_GONE_S``; then 404 again. Error messages quote user input cut short.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx

from app.departed import remember
from app.routing import build_routing_table
from tests.support import assert_openai_schema, gateway, instance, metadata, settings
from tests.support import snapshot as snap

AUTH_META = metadata(
    "auth", [("POST", "/v1/auth/token"), ("GET", "/v1/auth/me")],
    public=frozenset({"/v1/auth/token"}),
)  # fmt: skip


def assert_error(resp: httpx.Response, status: int, code: str) -> str:
    assert resp.status_code == status, resp.text
    assert_openai_schema("ErrorResponse", resp.json())
    assert resp.json()["error"]["code"] == code
    message: str = resp.json()["error"]["message"]
    return message


async def test_login_stays_public_and_answers_503_while_auth_is_gone() -> None:
    async with gateway(settings(nexus_auth_enabled=True)) as (client, state):
        state.apply(snap(instance("auth", meta=AUTH_META), revision=2))
        state.apply(snap(revision=3))  # auth's lease expired: no instance left
        for path in ("/v1/auth/token", "/services/auth/v1/auth/token"):
            resp = await client.post(path, json={"username": "a", "password": "b"})
            assert_error(resp, 503, "service_unavailable")
            assert int(resp.headers["retry-after"]) >= 1
        # A protected path of the same service still wants a bearer first.
        assert_error(await client.get("/v1/auth/me"), 401, "invalid_api_key")


async def test_a_departed_route_is_forgotten_after_its_time_and_dropped_on_return() -> None:
    async with gateway(settings(route_gone_s=0.3)) as (client, state):
        echo = instance("echo")
        state.apply(snap(echo, revision=2))
        state.apply(snap(revision=3))
        assert_error(await client.post("/v1/echo", json={}), 503, "service_unavailable")
        assert_error(await client.post("/v1/never", json={}), 404, "unknown_url")

        async def forgotten() -> bool:
            return (await client.post("/v1/echo", json={})).status_code == 404

        await eventually_async(forgotten)
        state.apply(snap(echo, revision=4))
        assert state.departed == {}
        route = state.table.resolve("POST", "/v1/echo")
        assert route.targets
        assert not route.gone_until


async def eventually_async(probe: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await probe():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


def test_remember_keeps_flags_and_never_outlives_its_deadline() -> None:
    served = build_routing_table(snap(instance("auth", meta=AUTH_META)))
    empty = build_routing_table(snap())
    now = time.monotonic()
    gone = remember(served, empty, {}, now=now, keep_s=60.0)
    token = gone[("POST", "/v1/auth/token")]
    assert token.public
    assert not token.targets
    assert token.gone_until == now + 60.0
    assert not gone[("GET", "/v1/auth/me")].public
    assert ("POST", "/services/auth/v1/auth/token") in gone
    table = build_routing_table(snap(), gone)
    assert table.is_public("POST", "/v1/auth/token")
    # Carried across later rebuilds until the deadline, not refreshed by them.
    assert remember(table, table, gone, now=now + 59, keep_s=60.0) == gone
    assert remember(table, table, gone, now=now + 61, keep_s=60.0) == {}
    assert remember(served, empty, {}, now=now, keep_s=0) == {}


async def test_user_input_is_quoted_cut_short_in_errors() -> None:
    async with gateway(settings()) as (client, state):
        state.apply(snap(instance("llm", meta=metadata(
            "llm", [("POST", "/v1/chat/completions")], models=["m1"])), revision=2))  # fmt: skip
        huge = "x" * 1_000_000
        resp = await client.post("/v1/chat/completions", json={"model": huge, "messages": []})
        message = assert_error(resp, 404, "model_not_found")
        assert len(message) < 300
        assert "1000000 characters" in message
        assert len(resp.content) < 1000
        message = assert_error(await client.get("/v1/" + "p" * 20_000), 404, "unknown_url")
        assert len(message) < 300
        resp = await client.request("PATCH", "/v1/chat/completions")
        assert resp.status_code == 405
