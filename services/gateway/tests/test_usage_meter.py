"""Reading usage from responses: whole SSE events however the reads cut them, the injected
``include_usage`` chunk removed, every dialect, malformed usage as unknown, and the formats."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest
from aiohttp import StreamReader

from app.durations import openai_duration
from app.routing import Route
from app.usage import Meter, Tap, count, kind_of, may_carry_usage
from tests.usage_fakes import Chunks, chat_chunk, sse, usage_chunk

CHAT = Route("POST", "/v1/chat/completions", "chat.completions", streaming=True)


def meter(route: Route = CHAT, stream: bool = True, model: str = "m1") -> Meter:
    from app.usage import kind_of as kind

    found = kind(route.path)
    assert found is not None
    return Meter(found, route, model, stream, None, "req-1")


async def relay(m: Meter, chunks: list[bytes], content_type: str = "text/event-stream") -> bytes:
    """What the client gets: the proxy's loop over the Tap (readany until at_eof)."""
    is_sse = content_type.startswith("text/event-stream")
    tap = Tap(m, cast(StreamReader, Chunks(chunks)), is_sse, strip=m.injected and is_sse)
    out = b""
    while True:
        chunk = await tap.readany()
        out += chunk
        if tap.at_eof():
            return out


def cut(raw: bytes, size: int) -> list[bytes]:
    return [raw[i : i + size] for i in range(0, len(raw), size)]


@pytest.mark.parametrize("size", [1, 3, 7, 64, 10_000])
async def test_stream_counts_without_changing_a_byte(size: int) -> None:
    raw = sse(chat_chunk("a"), chat_chunk("b"), usage_chunk(9, 2))
    m = meter()
    assert m.prepare(b'{"model":"m1","stream":true,"stream_options":{"include_usage":true}}')
    assert m.injected is False  # the client asked: its chunk stays
    assert await relay(m, cut(raw, size)) == raw
    assert (m.counts.input_tokens, m.counts.output_tokens) == (9, 2)
    assert m.outcome(200, False) == "ok"


@pytest.mark.parametrize("size", [1, 5, 50, 10_000])
async def test_injected_usage_chunk_is_removed(size: int) -> None:
    m = meter()
    body = m.prepare(b'{"model":"m1","messages":[],"stream":true}')
    assert body is not None
    assert orjson.loads(body)["stream_options"] == {"include_usage": True}
    first = sse(chat_chunk("a"), chat_chunk("b"))[: -len(b"data: [DONE]\n\n")]
    raw = first + b"data: " + orjson.dumps(usage_chunk(3, 1)) + b"\n\ndata: [DONE]\n\n"
    assert await relay(m, cut(raw, size)) == first + b"data: [DONE]\n\n"
    assert (m.counts.input_tokens, m.counts.output_tokens) == (3, 1)


async def test_include_usage_false_is_turned_on_and_its_chunk_removed() -> None:
    m = meter()
    body = m.prepare(b'{"model":"m1","stream":true,"stream_options":{"include_usage":false}}')
    assert body is not None
    assert orjson.loads(body)["stream_options"]["include_usage"] is True
    assert m.injected


async def test_crlf_events_and_a_missing_final_blank_line() -> None:
    m = meter()
    raw = (b"data: " + orjson.dumps(chat_chunk("x")) + b"\r\n\r\n"
           + b"data: " + orjson.dumps(usage_chunk(4, 4)))  # fmt: skip
    assert await relay(m, cut(raw, 9)) == raw
    assert m.counts.total == 8


async def test_responses_api_completed_event() -> None:
    route = Route("POST", "/v1/responses", "responses")
    m = meter(route)
    raw = (b"event: response.created\ndata: {\"type\":\"response.created\"}\n\n"
           b"event: response.completed\ndata: " + orjson.dumps({"type": "response.completed",
           "response": {"model": "m9", "usage": {"input_tokens": 12, "output_tokens": 6,
           "input_tokens_details": {"cached_tokens": 2}}}}) + b"\n\n")  # fmt: skip
    assert await relay(m, cut(raw, 11)) == raw
    c = m.counts
    assert (c.input_tokens, c.output_tokens, c.cached_tokens, c.served_model) == (12, 6, 2, "m9")


async def test_anthropic_message_start_and_delta() -> None:
    m = meter(Route("POST", "/v1/messages", "messages"))
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"model": "claude-x", "usage": {
            "input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 5}}},
        {"type": "content_block_delta", "delta": {"text": "hi"}},
        {"type": "message_delta", "usage": {"output_tokens": 15}},
        {"type": "message_stop"},
    ]  # fmt: skip
    raw = b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events
    )
    assert await relay(m, cut(raw, 13)) == raw
    assert (m.counts.input_tokens, m.counts.output_tokens, m.counts.cached_tokens) == (25, 15, 5)


@pytest.mark.parametrize(
    ("route", "doc", "expect"),
    [
        ("/v1/chat/completions", {"usage": {"prompt_tokens": 3, "completion_tokens": 4,
          "prompt_tokens_details": {"cached_tokens": 1}}}, (3, 4, 1)),
        ("/v1/embeddings", {"usage": {"prompt_tokens": 8, "total_tokens": 8}}, (8, None, None)),
        ("/v1/messages", {"usage": {"input_tokens": 2, "output_tokens": 9}}, (2, 9, None)),
        ("/v1/responses", {"usage": {"input_tokens": 5, "output_tokens": 1}}, (5, 1, None)),
    ],
)  # fmt: skip
async def test_plain_json(route: str, doc: dict[str, Any], expect: tuple[Any, ...]) -> None:
    m = meter(Route("POST", route, "x"), stream=False)
    raw = orjson.dumps({"id": "x", **doc})
    assert await relay(m, cut(raw, 5), "application/json") == raw
    assert (m.counts.input_tokens, m.counts.output_tokens, m.counts.cached_tokens) == expect


async def test_images_count_and_size() -> None:
    m = meter(Route("POST", "/v1/images/generations", "images.generate"), stream=False)
    m.prepare(b'{"prompt":"a cat","n":2,"size":"256x256"}')
    raw = orjson.dumps({"created": 1, "data": [{"url": "u1"}, {"url": "u2"}]})
    await relay(m, [raw], "application/json")
    assert (m.counts.images, m.counts.image_size) == (2, "256x256")


async def test_speech_characters_from_the_request() -> None:
    m = meter(Route("POST", "/v1/audio/speech", "audio.speech"), stream=False)
    m.prepare(orjson.dumps({"model": "tts-1", "input": "héllo wörld", "voice": "alloy"}))
    await relay(m, [b"RIFF...."], "audio/wav")
    assert m.counts.characters == 11


@pytest.mark.parametrize(
    "usage",
    [{"prompt_tokens": -1, "completion_tokens": 2},
     {"prompt_tokens": "7", "completion_tokens": 1.5},
     {"prompt_tokens": True, "completion_tokens": None}, "lots", [], {"prompt_tokens": 2**60}],
)  # fmt: skip
async def test_malformed_usage_is_unknown_and_never_breaks_the_stream(usage: Any) -> None:
    m = meter()
    raw = sse(chat_chunk("a"), {"choices": [], "usage": usage})
    assert await relay(m, cut(raw, 4)) == raw
    assert m.counts.input_tokens is None
    assert m.counts.seen
    assert m.outcome(200, False) == "ok"


async def test_garbage_events_pass_through() -> None:
    m = meter()
    raw = b'data: {"usage": nope\n\ndata: [DONE]\n\n: comment\n\n'
    assert await relay(m, cut(raw, 3)) == raw
    assert m.counts.input_tokens is None


async def test_an_early_end_is_recorded_with_what_was_seen() -> None:
    m = meter()
    tap = Tap(m, cast(StreamReader, Chunks([sse(chat_chunk("a"))[:20]])), True, strip=False)
    await tap.readany()
    m.body_complete = False  # the upstream cut it: no end seen
    record = m.record(200, client_gone=True)
    assert record["outcome"] == "client_gone"
    assert record["ttft_ms"] is not None
    assert m.outcome(200, False) == "incomplete"
    assert m.outcome(504, False) == "timeout"
    assert m.outcome(502, False) == "upstream_error"


def test_usage_null_chunks_are_not_parsed() -> None:
    assert not may_carry_usage(sse(chat_chunk("a"), chat_chunk("b")))  # "usage": null
    assert not may_carry_usage(b'data: {"usage" :  null}\n\n')
    assert may_carry_usage(orjson.dumps(usage_chunk()))
    assert may_carry_usage(b'data: {"usage":\n{"prompt_tokens":1}}')
    assert may_carry_usage(b'event: message_start\ndata: {}')
    assert not may_carry_usage(b'data: {"content": "the \\"usage\\" word"}')


def test_kinds_and_counts() -> None:
    assert kind_of("/v1/chat/completions") == "completions"
    assert kind_of("/services/llm/v1/embeddings") == "embeddings"
    assert kind_of("/chat/completions") == "completions"
    assert kind_of("/v1/echo") is None
    assert kind_of("/v1/organization/usage/completions") is None
    assert kind_of("/services/usage/v1/organization/usage/embeddings") is None
    assert [count(v) for v in (0, 5, -1, 1.0, True, "3", None)] == [
        0,
        5,
        None,
        None,
        None,
        None,
        None,
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.02, "20ms"), (0, "0ms"), (1, "1s"), (1.5, "1.5s"), (59.25, "59.25s"), (360, "6m0s"),
     (3725, "1h2m5s"), (-3, "0ms")],
)  # fmt: skip
def test_openai_duration_format(seconds: float, text: str) -> None:
    assert openai_duration(seconds) == text
