"""The ``openai`` SDK against a real uvicorn of the service: formats, errors, streaming."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from app.backends import TTSBackend, libespeak
from app.backends.espeak import EspeakBackend
from app.main import build_app
from app.schemas import ResponseFormat
from nexus_testing import ServiceProcess, UvicornThread, wait_for_http
from tests.tts_support import (
    LONG_TEXT,
    SENTENCE,
    ScriptedBackend,
    assert_audible,
    decode,
    make_settings,
    speech_bounds,
)

pytestmark = pytest.mark.integration
FORMATS: list[ResponseFormat] = ["mp3", "opus", "aac", "flac", "wav", "pcm"]
STREAMED = [f for f in FORMATS if f != "flac"]  # FLAC is sent whole: see app/encoding.py


def sdk(server: UvicornThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def serve(backend: TTSBackend | None = None, **settings: Any) -> UvicornThread:
    return UvicornThread(build_app(make_settings(**settings), backend=backend)).start()


@pytest.fixture(scope="module")
def espeak() -> Iterator[openai.OpenAI]:
    """An SDK client of a server speaking with espeak (libespeak-ng from its wheel)."""
    server = serve(tts_backend="espeak")
    with sdk(server) as client:
        yield client
    server.stop()


@pytest.mark.parametrize("response_format", FORMATS)
def test_speech_create_returns_decodable_audio(
    espeak: openai.OpenAI, response_format: ResponseFormat
) -> None:
    audio = espeak.audio.speech.create(
        model="tts-1", voice="alloy", input=SENTENCE, response_format=response_format
    )
    samples, rate = decode(audio.content, response_format)
    assert_audible(samples, rate, *speech_bounds(SENTENCE))


@pytest.mark.parametrize("response_format", FORMATS)
def test_streaming_response_returns_decodable_audio(
    espeak: openai.OpenAI, response_format: ResponseFormat
) -> None:
    with espeak.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="nova", input=SENTENCE, response_format=response_format
    ) as response:
        assert response.headers["transfer-encoding"] == "chunked"
        data = b"".join(response.iter_bytes())
    assert_audible(*decode(data, response_format), *speech_bounds(SENTENCE))


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"response_format": "mp4"}, "response_format"),
        ({"voice": "bob"}, "voice"),
        ({"input": ""}, "input"),
        ({"input": "x" * 4097}, "input"),
        ({"speed": 5.0}, "speed"),
        ({"stream_format": "chunks"}, "stream_format"),
    ],
)
def test_bad_input_raises_bad_request(
    espeak: openai.OpenAI, change: dict[str, Any], param: str
) -> None:
    request = {"model": "tts-1", "voice": "alloy", "input": SENTENCE, **change}
    with pytest.raises(openai.BadRequestError) as caught:
        espeak.audio.speech.create(**request)
    assert caught.value.param == param


def test_unknown_model_raises_not_found(espeak: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        espeak.audio.speech.create(model="whisper-1", voice="alloy", input="Hi.")


def test_sse_stream_format(espeak: openai.OpenAI) -> None:
    with espeak.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="sage", input=SENTENCE,
        response_format="wav", stream_format="sse",
    ) as response:  # fmt: skip
        events = [json.loads(line[6:]) for line in response.iter_lines() if line]
    assert [e["type"] for e in events[-1:]] == ["speech.audio.done"]
    assert {e["type"] for e in events[:-1]} == {"speech.audio.delta"}
    wav = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert_audible(*decode(wav, "wav"), *speech_bounds(SENTENCE))


@pytest.mark.parametrize("response_format", STREAMED)
def test_first_bytes_arrive_before_synthesis_of_a_long_input_ends(
    response_format: ResponseFormat,
) -> None:
    """The backend pauses after its first half second of audio until the client holds bytes:
    a server that buffered the whole file would never release it (and the gate would time
    out), so reaching the end proves the first bytes came out mid-synthesis."""
    backend = ScriptedBackend(inner=EspeakBackend(), gate_after_s=0.5)
    server = serve(backend)
    try:
        with (
            sdk(server) as client,
            client.audio.speech.with_streaming_response.create(
                model="tts-1", voice="echo", input=LONG_TEXT, response_format=response_format
            ) as response,
        ):
            chunks = response.iter_bytes()
            first = next(chunks)
            assert first
            assert not backend.finished.is_set()  # synthesis still running
            backend.release.set()
            data = first + b"".join(chunks)
        assert backend.gate_opened_by_client
        assert backend.finished.is_set()
        assert_audible(*decode(data, response_format), *speech_bounds(LONG_TEXT))
    finally:
        server.stop()


def test_backend_crash_mid_stream_cuts_the_stream_and_service_keeps_serving(
    capfd: pytest.CaptureFixture[str],
) -> None:
    backend = ScriptedBackend(chunks=8, fail_at=4)
    server = serve(backend)
    try:
        with sdk(server) as client:
            speech = client.audio.speech
            with (
                # The SDK's transport (httpx or its fork) reports the truncated chunked body.
                pytest.raises(Exception, match="incomplete chunked read"),
                speech.with_streaming_response.create(
                    model="tts-1", voice="alloy", input=SENTENCE, response_format="pcm"
                ) as response,
            ):
                b"".join(response.iter_bytes())
            backend.fail_at = None
            again = speech.create(
                model="tts-1", voice="alloy", input=SENTENCE, response_format="wav"
            )
            assert_audible(*decode(again.content, "wav"), 1.0, 3.0)
    finally:
        server.stop()
    assert '"event": "speech stream cut"' in capfd.readouterr().err


def test_backend_crash_at_start_is_an_internal_server_error() -> None:
    server = serve(ScriptedBackend(fail_at=0))
    try:
        with sdk(server) as client, pytest.raises(openai.InternalServerError) as caught:
            client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.")
        assert caught.value.status_code == 500
    finally:
        server.stop()


def wait_for(predicate: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_client_hanging_up_stops_synthesis() -> None:
    backend = ScriptedBackend(inner=EspeakBackend(), gate_after_s=0.5)
    server = serve(backend)
    try:
        with sdk(server) as client:
            with client.audio.speech.with_streaming_response.create(
                model="tts-1", voice="echo", input=LONG_TEXT, response_format="pcm"
            ) as response:
                chunks = response.iter_bytes()  # held: dropping it would close the stream
                assert next(chunks)
                assert libespeak.running() == 1  # still speaking, paused at the gate
            # The response is closed mid-stream: the client hung up.
            cancelled = 'outcome="cancelled"} 1.0'
            assert wait_for(lambda: cancelled in httpx.get(f"{server.url}/metrics").text)
            assert wait_for(lambda: libespeak.running() == 0)
            assert not backend.finished.is_set()
    finally:
        backend.release.set()
        server.stop()


def test_service_runs_from_its_directory_as_its_container_does() -> None:
    env = {"TTS_BACKEND": "stub", "ETCD_ENDPOINTS": "", "SERVICE_NAME": "tts"}
    service = ServiceProcess(Path(__file__).resolve().parents[1], env=env).start()
    try:
        assert wait_for_http(f"{service.url}/readyz").json()["status"] == "ready"
        with openai.OpenAI(base_url=f"{service.url}/v1", api_key="-", max_retries=0) as client:
            audio = client.audio.speech.create(
                model="tts-1", voice="alloy", input=SENTENCE, response_format="wav"
            )
        assert_audible(*decode(audio.content, "wav"), *speech_bounds(SENTENCE))
    finally:
        service.stop()
