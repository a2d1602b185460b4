"""The whole stack as a user meets it: ``nexus up`` (every service, real etcd, auth on), a
fake Ollama on loopback, and the ``openai`` SDK pointed at the gateway with the dev API key."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import openai
import pytest
import soundfile
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from nexus_testing import UvicornThread, free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
NEXUS = Path(sys.executable).with_name("nexus")
SAY = "Nexus speaks through the gateway."


def fake_ollama() -> Starlette:
    """Just enough of Ollama's API for the gateway: tags, version, chat (plain and SSE)."""

    async def tags(_: Request) -> JSONResponse:
        return JSONResponse({"models": [{"name": "llama3.2:latest", "model": "llama3.2:latest"}]})

    async def version(_: Request) -> JSONResponse:
        return JSONResponse({"version": "0.9.0"})

    async def chat(request: Request) -> Response:
        body = await request.json()
        if body.get("stream"):

            async def events() -> Iterator[bytes]:  # type: ignore[misc]
                for word in ("Hello", " there"):
                    delta = {"choices": [{"index": 0, "delta": {"content": word}}],
                             "object": "chat.completion.chunk", "id": "c1", "created": 1,
                             "model": body["model"]}  # fmt: skip
                    yield b"data: " + JSONResponse(delta).body + b"\n\n"
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse({
            "id": "c1", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Hello there"}}],
        })  # fmt: skip

    return Starlette(routes=[
        Route("/api/tags", tags), Route("/api/version", version),
        Route("/v1/chat/completions", chat, methods=["POST"]),
    ])  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("stack")
    names = sorted(p.parent.parent.name for p in (ROOT / "services").glob("*/app/main.py"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SERVICE_", "NEXUS_", "ETCD_")) and not k.endswith("_PORT")}
    env.update({f"{n.upper()}_PORT": str(free_port()) for n in names})
    with UvicornThread(fake_ollama()) as ollama:
        env.update(
            NEXUS_STATE_DIR=str(tmp / "state"), NEXUS_ETCD_PORT=str(free_port()),
            NEXUS_ETCD_PEER_PORT=str(free_port()), GATEWAY_METRICS_PORT=str(free_port()),
            DATABASE_URL=f"sqlite+aiosqlite:///{tmp / 'auth.db'}",
            JWT_SIGNING_KEY_FILE=str(tmp / "jwt.pem"), OLLAMA_BASE_URL=ollama.url,
            IMAGES_BACKEND="stub", TTS_BACKEND="espeak",
        )  # fmt: skip
        proc = subprocess.Popen(
            [str(NEXUS), "up", "--root", str(ROOT)], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        lines: list[str] = []
        reader = threading.Thread(
            target=lambda: lines.extend(line.rstrip() for line in proc.stdout or ()), daemon=True
        )
        reader.start()
        try:
            deadline = time.monotonic() + 120
            while not any("Ctrl-C stops everything." in line for line in lines):
                assert proc.poll() is None, "\n".join(lines)
                assert time.monotonic() < deadline, "\n".join(lines)
                time.sleep(0.1)
            gateway = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
            key = (tmp / "state" / "dev-admin-key").read_text().strip()
            wait_for_routes(gateway, key)
            yield gateway, key
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            reader.join(10)
            if proc.stdout is not None:
                proc.stdout.close()


def wait_for_routes(gateway: str, key: str) -> None:
    """Until discovery has the images, tts and Ollama routes (metadata fetched)."""
    wanted = {"/v1/images/generations", "/v1/audio/speech", "/v1/chat/completions"}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        resp = httpx.get(f"{gateway}/v1/models", headers={"Authorization": f"Bearer {key}"})
        ids = {m["id"] for m in resp.json().get("data", [])} if resp.status_code == 200 else set()
        if {"llama3.2:latest", "tts-1", "dall-e-3"} <= ids:
            return
        time.sleep(0.2)
    raise AssertionError(f"routes {wanted} not ready")


@pytest.fixture(scope="module")
def client(stack: tuple[str, str]) -> openai.OpenAI:
    gateway, key = stack
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=key, max_retries=0)


def test_models_union_of_every_service(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"llama3.2:latest", "tts-1", "dall-e-2", "dall-e-3"} <= ids


def test_chat_plain_and_streamed(client: openai.OpenAI) -> None:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "hi"}
    ]
    reply = client.chat.completions.create(model="llama3.2", messages=messages)
    assert reply.choices[0].message.content == "Hello there"
    stream = client.chat.completions.create(model="llama3.2", messages=messages, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello there"


@pytest.mark.parametrize("size", ["256x256", "1024x1792"])
def test_images_b64(client: openai.OpenAI, size: str) -> None:
    result = client.images.generate(prompt="a lighthouse", size=size,  # type: ignore[arg-type]
                                    response_format="b64_json", n=2)  # fmt: skip
    assert result.data is not None
    assert len(result.data) == 2
    for item in result.data:
        assert item.b64_json is not None
        image = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
        assert (image.format, f"{image.width}x{image.height}") == ("PNG", size)


def test_images_url_works_without_a_bearer(client: openai.OpenAI, stack: tuple[str, str]) -> None:
    result = client.images.generate(prompt="a lighthouse", size="512x512", response_format="url")
    assert result.data is not None
    url = result.data[0].url
    assert url is not None
    assert url.startswith(f"{stack[0]}/services/images/")  # served through the gateway
    image = Image.open(io.BytesIO(httpx.get(url, timeout=10).content))  # no Authorization
    assert image.size == (512, 512)


def decode(data: bytes, fmt: str) -> tuple[np.ndarray, int]:  # type: ignore[type-arg]
    if fmt == "pcm":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, 24_000
    if fmt == "aac":  # FFmpeg through PyAV (libsndfile reads no AAC)
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.audio[0]
            frames = [f.to_ndarray().reshape(-1) for f in container.decode(stream)]
        return np.concatenate(frames).astype(np.float32), stream.rate
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples[:, 0], int(rate)


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_speech_every_format_decodes_to_speech(client: openai.OpenAI, fmt: str) -> None:
    audio = client.audio.speech.create(
        model="tts-1", voice="alloy", input=SAY, response_format=fmt  # type: ignore[arg-type]
    )
    samples, rate = decode(audio.content, fmt)
    seconds = len(samples) / rate
    assert 0.8 <= seconds <= 6.0, seconds  # five words of speech
    assert float(np.sqrt(np.mean(np.square(samples)))) > 0.01  # not silence


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.images.generate(prompt="x", size="300x300"),
        lambda c: c.images.generate(prompt="", size="256x256"),
        lambda c: c.images.generate(prompt="x", n=11),
        lambda c: c.audio.speech.create(model="tts-1", voice="alloy", input=SAY,
                                        response_format="wma"),
        lambda c: c.audio.speech.create(model="tts-1", voice="robot", input=SAY),
        lambda c: c.audio.speech.create(model="tts-1", voice="alloy", input=""),
        lambda c: c.audio.speech.create(model="tts-1", voice="alloy", input="x" * 4097),
    ],
    ids=["size", "empty-prompt", "n", "format", "voice", "empty-input", "too-long"],
)
def test_bad_inputs_are_bad_request_errors(client: openai.OpenAI, call: object) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        call(client)  # type: ignore[operator]
    assert info.value.body is not None
    assert "param" in info.value.body  # type: ignore[operator]
