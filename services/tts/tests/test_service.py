"""The endpoint in process: formats, SSE, failures and metrics."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from app.audio import SAMPLE_RATE
from tests.tts_support import (
    SENTENCE,
    ScriptedBackend,
    assert_audible,
    check_openai_schema,
    decode,
    make_settings,
    speech_bounds,
)

SPEECH = {"model": "tts-1", "input": SENTENCE, "voice": "coral"}


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
async def test_each_format_from_espeak(make_client: Any, response_format: str) -> None:
    client, _ = await make_client(make_settings(tts_backend="espeak"))
    body = {**SPEECH, "response_format": response_format}
    response = await client.post("/v1/audio/speech", json=body)
    assert response.status_code == 200
    samples, rate = decode(response.content, response_format)
    assert rate == SAMPLE_RATE
    assert_audible(samples, rate, *speech_bounds(SENTENCE))


async def test_default_format_is_mp3(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/audio/speech", json=SPEECH)
    assert response.headers["content-type"] == "audio/mpeg"
    samples, rate = decode(response.content, "mp3")
    assert_audible(samples, rate, *speech_bounds(SENTENCE))


async def test_speed_is_applied_by_the_service_for_backends_without_it(make_client: Any) -> None:
    backend = ScriptedBackend(chunks=8, chunk_s=0.25)
    backend.native_speed = False  # like Pocket TTS
    client, _ = await make_client(backend=backend)
    body = {**SPEECH, "response_format": "pcm", "speed": 2.0}
    samples, rate = decode((await client.post("/v1/audio/speech", json=body)).content, "pcm")
    assert len(samples) / rate == pytest.approx(1.0, rel=0.05)


async def test_sse_sends_audio_deltas_then_done_with_usage(client: httpx.AsyncClient) -> None:
    body = {**SPEECH, "response_format": "pcm", "stream_format": "sse"}
    response = await client.post("/v1/audio/speech", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(block.removeprefix("data: "))
        for block in response.text.split("\n\n")
        if block.strip()
    ]
    *deltas, done = events
    assert deltas
    for event in deltas:
        check_openai_schema("SpeechAudioDeltaEvent", event)
    check_openai_schema("SpeechAudioDoneEvent", done)
    assert done["type"] == "speech.audio.done"
    usage = done["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    pcm = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert_audible(*decode(pcm, "pcm"), *speech_bounds(SENTENCE))


async def test_backend_crash_at_start_is_a_500_envelope_and_service_keeps_serving(
    make_client: Any,
) -> None:
    backend = ScriptedBackend(fail_at=0)
    client, _ = await make_client(backend=backend)
    response = await client.post("/v1/audio/speech", json=SPEECH)
    assert response.status_code == 500
    body = response.json()
    check_openai_schema("ErrorResponse", body)
    assert "scripted backend" in body["error"]["message"]
    assert "Traceback" not in response.text
    assert "crash" not in response.text  # the cause goes to the log, not the client
    backend.fail_at = None
    assert (await client.post("/v1/audio/speech", json=SPEECH)).status_code == 200
    assert (await client.get("/readyz")).status_code == 200


async def test_full_queue_is_429(make_client: Any) -> None:
    client, _ = await make_client(backend=ScriptedBackend(busy=True))
    response = await client.post("/v1/audio/speech", json=SPEECH)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    check_openai_schema("ErrorResponse", response.json())


async def test_metrics_count_generations_and_durations_per_backend(make_client: Any) -> None:
    backend = ScriptedBackend(chunks=2)
    client, _ = await make_client(backend=backend)
    for response_format in ("wav", "wav", "flac"):
        body = {**SPEECH, "response_format": response_format}
        assert (await client.post("/v1/audio/speech", json=body)).status_code == 200
    backend.fail_at = 0
    await client.post("/v1/audio/speech", json=SPEECH)
    text = (await client.get("/metrics")).text
    ok = 'nexus_tts_generations_total{backend="scripted",format="wav",outcome="ok"} 2.0'
    assert ok in text
    assert 'backend="scripted",format="flac",outcome="ok"} 1.0' in text
    assert 'backend="scripted",format="mp3",outcome="error"} 1.0' in text
    assert 'nexus_tts_generation_duration_seconds_count{backend="scripted"} 3.0' in text
    assert 'nexus_tts_time_to_first_audio_seconds_count{backend="scripted"} 3.0' in text
    assert 'nexus_tts_audio_seconds_total{backend="scripted"} 1.5' in text
