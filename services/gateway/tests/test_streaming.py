"""Streaming through real servers: unbuffered SSE, keep-alive comments, disconnects."""

from __future__ import annotations

import logging
import threading

import httpx
import orjson
import pytest

from tests.servers import ollama_and_gateway
from tests.support import OllamaScript, wait_until

pytestmark = pytest.mark.integration
CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def data_lines(lines: list[str]) -> list[str]:
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


def test_sse_chunks_arrive_as_they_are_produced_and_done_comes_last() -> None:
    script = OllamaScript()
    with (
        ollama_and_gateway(script) as (_, gw, _),
        httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=CHAT, timeout=30) as resp,
    ):
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"] == "no-cache"
        assert resp.headers["x-accel-buffering"] == "no"
        lines = []
        for line in resp.iter_lines():
            lines.append(line)
            if line.startswith("data: "):
                script.release.set()  # the fake sends the rest only now
    assert script.released_in_time is True, "the first chunk was held back by the gateway"
    events = data_lines(lines)
    assert events[-1] == "[DONE]"
    deltas = [orjson.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1]]
    assert "".join(d for d in deltas if d) == "Hello there"


def test_keepalive_comments_flow_while_the_first_token_is_awaited() -> None:
    hold = threading.Event()
    script = OllamaScript(hold_headers=hold)
    script.release.set()
    with (
        ollama_and_gateway(script, sse_keepalive_s=0.05) as (_, gw, _),
        httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=CHAT, timeout=30) as resp,
    ):
        assert resp.status_code == 200
        lines = []
        for line in resp.iter_lines():
            lines.append(line)
            if line == ": keep-alive":
                hold.set()  # only now does the fake answer at all
    assert lines[0] == ": keep-alive"
    events = data_lines(lines)
    assert events[-1] == "[DONE]"
    assert len(events) == 5


def test_an_error_after_keepalives_arrives_as_an_sse_event() -> None:
    hold = threading.Event()
    script = OllamaScript(hold_headers=hold)
    body = {**CHAT, "model": "ghost"}  # listed by /api/tags, then answered with a 404
    with (
        ollama_and_gateway(script, sse_keepalive_s=0.05) as (_, gw, _),
        httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, timeout=30) as resp,
    ):
        lines = []
        for line in resp.iter_lines():
            lines.append(line)
            hold.set()
    (event,) = data_lines(lines)
    assert orjson.loads(event)["error"]["code"] == "model_not_found"


def test_an_upstream_error_after_keepalives_is_relayed_in_band() -> None:
    hold = threading.Event()
    script = OllamaScript(hold_headers=hold)
    body = {**CHAT, "model": "picky", "temperature": 9}
    with (
        ollama_and_gateway(script, sse_keepalive_s=0.05) as (_, gw, _),
        httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, timeout=30) as resp,
    ):
        assert resp.status_code == 200  # committed by the first keep-alive
        lines = []
        for line in resp.iter_lines():
            lines.append(line)
            hold.set()
    (event,) = data_lines(lines)
    assert orjson.loads(event)["error"]["param"] == "temperature"  # the upstream's own error


class AccessLines(logging.Handler):
    """The access lines of a gateway running in this process (added once it has started:
    its logging setup replaces the root handlers that pytest's ``caplog`` uses)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_client_disconnect_cancels_the_upstream_request() -> None:
    script = OllamaScript(endless=True)
    script.release.set()
    access = AccessLines()
    logger = logging.getLogger("nexus.http")
    with ollama_and_gateway(script) as (_, gw, state):
        level = logger.level
        logger.addHandler(access)
        logger.setLevel(logging.INFO)
        with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=CHAT, timeout=30) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    break  # leave mid-stream; closing the response drops the connection
        wait_until(script.stream_closed.is_set, 10, "the upstream stream to be closed")
        wait_until(lambda: state.proxy.in_flight == 0, 10, "the gateway to finish the request")
        (ollama,) = state.table.snapshot.instances
        assert state.upstreams.state(ollama.key).in_flight == 0

        def access_statuses() -> list[int]:
            return [orjson.loads(line)["status"] for line in access.lines if "/chat/" in line]

        try:  # the access log (and the kit's HTTP metrics) say 499, not the 200 that went out
            assert wait_until(access_statuses, 10, "the access line") == [499]
        finally:
            logger.removeHandler(access)
            logger.setLevel(level)
