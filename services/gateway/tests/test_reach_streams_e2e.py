"""Upstream errors and stream ends as clients need them, end to end through a real gateway.

- a 502 names the service, never its address or the client library's exception;
- ``UPSTREAM_TOTAL_TIMEOUT_S`` cutting a stream ends it with an SSE error event, and the
  access log records 504, not 200;
- a slow streaming upstream gets the client ``200 text/event-stream`` and a first comment
  early (``SSE_FIRST_COMMENT_S``), while an error that comes before keeps its real status.

Static ``kind: openai`` upstreams (``NEXUS_OPENAI_UPSTREAMS``), no etcd, no prober. No timed
asserts: the fakes hold their answers until the test has seen what it waits for.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest

from app.main import build_app
from app.state import GatewayState
from nexus_testing import UvicornThread, free_port, wait_for_http, wait_until
from tests.llm_fakes import Server, openai_server
from tests.support import settings

pytestmark = pytest.mark.integration
USER = [{"role": "user", "content": "hi"}]
QUICK = Server("vllm", ("quick", "busy"))
SLOW = Server("vllm", ("slow",))


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, GatewayState]]:
    QUICK.gate.unavailable.add("busy")
    with UvicornThread(openai_server(QUICK)) as quick, UvicornThread(openai_server(SLOW)) as slow:
        gone = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        config = settings(
            nexus_openai_upstreams=f"quick={quick.url},slow={slow.url}/v1,gone={gone}",
            upstream_total_timeout_s=2.0, sse_first_comment_s=0.3, sse_keepalive_s=0.3,
        )  # fmt: skip
        app = build_app(config)
        with UvicornThread(app) as gateway:
            wait_for_http(f"{gateway.url}/readyz", timeout_s=15)
            yield gateway.url, app.state.gateway


@pytest.fixture(scope="module")
def gw(served: tuple[str, GatewayState]) -> str:
    return served[0]


def test_a_502_names_the_service_never_its_address(gw: str) -> None:
    # "ghost" is served by no instance that lists models; "gone" lists none (its list never
    # came), so it is the candidate, and its connect fails.
    resp = httpx.post(f"{gw}/v1/chat/completions", json={"model": "ghost", "messages": USER})
    assert resp.status_code == 502, resp.text
    message = resp.json()["error"]["message"]
    assert message == "Could not connect to the upstream service gone."
    assert resp.json()["error"]["type"] == "upstream_error"


def test_the_total_timeout_ends_a_stream_with_an_error_event(
    gw: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nexus.http")  # for the whole test: the access line
    # is written after the response's last byte, so after the client may have moved on
    SLOW.gate.endless = True
    try:
        with httpx.stream(
            "POST", f"{gw}/v1/chat/completions", timeout=30,
            json={"model": "slow", "messages": USER, "stream": True},
        ) as resp:  # fmt: skip
            assert resp.status_code == 200
            events = [line for line in resp.iter_lines() if line.startswith("data: ")]
    finally:
        SLOW.gate.endless = False
    last = orjson.loads(events[-1].removeprefix("data: "))
    assert last["error"]["code"] == "upstream_timeout", last
    with openai.OpenAI(base_url=f"{gw}/v1", api_key="k", max_retries=0) as sdk:
        SLOW.gate.endless = True
        try:
            stream = sdk.chat.completions.create(model="slow", messages=USER, stream=True)  # type: ignore[arg-type]
            with pytest.raises(openai.APIError, match="did not finish"):
                for _ in stream:
                    pass
        finally:
            SLOW.gate.endless = False

    def logged_504s() -> int:
        lines = [r.getMessage() for r in caplog.records if r.name == "nexus.http"]
        return sum('"status":504' in line and "/v1/chat/completions" in line for line in lines)

    wait_until(lambda: logged_504s() == 2, 10, "two 504 access lines")  # a bound, not a timing


def test_a_slow_stream_is_committed_early_and_then_relayed(gw: str) -> None:
    SLOW.gate.hold = threading.Event()
    try:
        request = {"model": "slow", "messages": USER, "stream": True}
        with httpx.stream("POST", f"{gw}/v1/chat/completions", json=request, timeout=30) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            lines = resp.iter_lines()
            assert next(lines) == ": keep-alive"  # before the upstream said anything
            SLOW.gate.hold.set()
            rest = [line for line in lines if line.startswith("data: ")]
    finally:
        SLOW.gate.hold = None
    assert rest[-1] == "data: [DONE]"


def test_comments_go_on_between_late_headers_and_the_first_event(gw: str) -> None:
    """Committed by comments before the upstream answered, then its headers came and its
    first event did not: comments keep the connection alive until it does (a try-out found
    none in that window, so a proxy in between could cut a stream waiting for its first
    token)."""
    SLOW.gate.hold, SLOW.gate.first = threading.Event(), threading.Event()
    SLOW.gate.streaming = False
    after: list[str] = []
    try:
        request = {"model": "slow", "messages": USER, "stream": True}
        with httpx.stream("POST", f"{gw}/v1/chat/completions", json=request, timeout=30) as resp:
            lines = resp.iter_lines()
            assert next(lines) == ": keep-alive"  # committed before the upstream answered
            SLOW.gate.hold.set()  # its headers now; its first event waits for `first`
            wait_until(lambda: SLOW.gate.streaming, 10, "the upstream's headers sent")
            for line in lines:  # at most one comment of the first wait can still be in flight
                after.append(line)
                if after.count(": keep-alive") == 2:
                    SLOW.gate.first.set()
    finally:
        SLOW.gate.hold = SLOW.gate.first = None
    data = [line for line in after if line.startswith("data: ")]
    assert after.index(data[0]) >= 2  # two comments before the first event
    assert data[-1] == "data: [DONE]"


def test_an_alias_falls_over_on_a_connect_failure(served: tuple[str, GatewayState]) -> None:
    # No etcd here: the alias table is set the way its watch sets it (one assignment).
    gw, state = served
    aliases = state.aliases
    aliases.table = {"fast-one": ("ghost", "quick")}  # "ghost": only "gone" may serve it
    try:
        resp = httpx.post(f"{gw}/v1/chat/completions",
                          json={"model": "fast-one", "messages": USER})  # fmt: skip
        assert resp.status_code == 200, resp.text
        assert resp.json()["choices"][0]["message"]["content"] == "vllm:Hello there"
        assert QUICK.gate.bodies[-1]["model"] == "quick"
    finally:
        aliases.table = {}


def test_an_early_error_keeps_its_status(gw: str) -> None:
    resp = httpx.post(f"{gw}/v1/chat/completions",
                      json={"model": "busy", "messages": USER, "stream": True})  # fmt: skip
    assert resp.status_code == 503
    assert resp.json()["error"]["message"] == "model is loading"
