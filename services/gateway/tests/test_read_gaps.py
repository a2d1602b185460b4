"""A stream's read timeout kept by one sweep (``readgaps.py``) instead of aiohttp's timer per
chunk: a stream that keeps trickling is never cut, a silent one fails as aiohttp's own
timeout would, and end to end the client gets an SSE error event."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import httpx
import orjson
import pytest

from app.readgaps import ReadGaps
from tests.servers import ollama_and_gateway
from tests.support import OllamaScript, wait_until

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@dataclass
class Side:
    """The two aiohttp objects the sweep touches: the body reader and the protocol."""

    total_bytes: int = 0
    read_timeout: float | None = 300.0
    errors: list[BaseException] = field(default_factory=list)

    def set_exception(self, exc: BaseException) -> None:
        self.errors.append(exc)


@dataclass
class Transport:
    reading: bool = True

    def is_reading(self) -> bool:
        return self.reading


@dataclass
class Response:
    content: Side = field(default_factory=Side)
    protocol: Side = field(default_factory=Side)
    transport: Transport = field(default_factory=Transport)

    @property
    def connection(self) -> Any:
        return self


def response() -> aiohttp.ClientResponse:
    return cast(aiohttp.ClientResponse, Response())


async def test_a_trickling_stream_is_never_cut_and_a_silent_one_is() -> None:
    gaps = ReadGaps(0.2)
    trickle, silent = response(), response()
    gaps.watch(trickle, 0.2)
    gaps.watch(silent, 0.2)
    assert cast(Response, trickle).protocol.read_timeout is None  # aiohttp's timer is off
    try:
        for _ in range(12):  # 0.6 s in all, three times the limit, a byte every 0.05 s
            cast(Response, trickle).content.total_bytes += 1
            await asyncio.sleep(0.05)
        side = cast(Response, silent)
        assert side.content.errors
        assert isinstance(side.content.errors[0], aiohttp.ServerTimeoutError)
        assert side.protocol.errors  # as aiohttp's own timeout: protocol and reader both fail
        assert not cast(Response, trickle).content.errors
        assert len(gaps) == 1  # the cut one is no longer watched
    finally:
        gaps.close()


async def test_a_stream_paused_by_a_slow_client_is_not_cut() -> None:
    """Reading paused (the client is not taking the bytes, the body buffer is full): the
    upstream's silence is not its own, as with aiohttp's timer (found by a try-out: a client
    pausing 5 s had a healthy 20 MB stream cut with a 2 s limit)."""
    gaps = ReadGaps(0.2)
    paused = response()
    cast(Response, paused).transport.reading = False
    gaps.watch(paused, 0.2)
    try:
        await asyncio.sleep(0.6)  # three times the limit, no byte arrived
        assert not cast(Response, paused).content.errors
        cast(Response, paused).transport.reading = True  # resumed, and then silent: cut
        await asyncio.sleep(0.4)
        assert cast(Response, paused).content.errors
    finally:
        gaps.close()


async def test_the_sweep_stops_when_nothing_is_watched() -> None:
    gaps = ReadGaps(0.2)
    gap = gaps.watch(response(), 0.2)
    gaps.forget(gap)
    await asyncio.sleep(0.15)  # past one sweep
    assert gaps._handle is None  # no timer left running for an idle worker
    gaps.close()


@pytest.mark.integration
def test_a_stream_silent_past_its_read_limit_ends_with_an_error_event() -> None:
    script = OllamaScript()  # sends the first chunk, then holds the rest (never released here)
    with (
        ollama_and_gateway(script, llm_first_byte_timeout_s=0.4) as (_, gw, state),
        httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=CHAT, timeout=30) as resp,
    ):
        assert resp.status_code == 200
        events = []
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events.append(orjson.loads(line.removeprefix("data: ")))
                if len(events) == 1:  # relaying: the stream's timeout is the sweep's
                    assert len(state.proxy.read_gaps) == 1
    assert events[0]["choices"][0]["delta"]["content"] == "Hel"
    assert events[-1]["error"]["code"] == "upstream_timeout", events[-1]  # 504, as before the head
    wait_until(lambda: len(state.proxy.read_gaps) == 0, 5, "the stream forgotten")
