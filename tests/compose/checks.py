"""Client checks of the compose stack, run by ``scripts/compose_test.py`` inside the test's
network namespace (the gateway's published port is on that namespace's loopback).

``python tests/compose/checks.py stack``: every check a user would make with the ``openai``
SDK (models, chat plain and streamed via the fake Ollama, images b64 and url, speech decoded
and told apart from the stub tone, the template's echo, a path three services advertise,
``/v1/routes``). ``speech``: wait until speech is routed (after the tts process was killed).
``instances``: print ``{service: [instance ids]}`` from ``/v1/services`` as JSON.
Settings come from the environment: ``GATEWAY_URL`` and ``NEXUS_KEY``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import time
import traceback
from collections.abc import Callable

import httpx
import numpy as np
import numpy.typing as npt
import openai
import soundfile
from openai.types.chat import ChatCompletionMessageParam
from PIL import Image

GATEWAY = os.environ.get("GATEWAY_URL", "http://127.0.0.1:8800")
KEY = os.environ.get("NEXUS_KEY", "")
SAY = "The quick brown fox jumps over the lazy dog."
Check = Callable[[openai.OpenAI], None]


def client() -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key=KEY, max_retries=0, timeout=60)


def admin(path: str) -> httpx.Response:
    response = httpx.get(f"{GATEWAY}{path}", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    response.raise_for_status()
    return response


def tonality(samples: npt.NDArray[np.float32], rate: int) -> float:
    """Median share of a 50 ms frame's energy within ±3 FFT bins of its peak: ~1 for the stub's
    pure tones, well under 0.6 for speech (harmonics, formants)."""
    frame = rate // 20
    shares = []
    for start in range(0, len(samples) - frame, frame):
        chunk = samples[start : start + frame]
        if np.sqrt(np.mean(np.square(chunk))) < 0.01:
            continue
        power = np.abs(np.fft.rfft(chunk * np.hanning(frame))) ** 2
        peak = int(np.argmax(power))
        shares.append(float(power[max(0, peak - 3) : peak + 4].sum() / power.sum()))
    return float(np.median(shares)) if shares else 1.0


def check_models(c: openai.OpenAI) -> None:
    ids = {m.id for m in c.models.list()}
    for expected in ("llama3.2:latest", "tts-1"):
        assert expected in ids, f"{expected} not in {sorted(ids)}"


def check_chat(c: openai.OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello compose"}]
    done = c.chat.completions.create(model="llama3.2", messages=messages)
    assert done.choices[0].message.content == "echo: hello compose", done
    stream = c.chat.completions.create(model="llama3.2", messages=messages, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "echo: hello compose", text


def check_images(c: openai.OpenAI) -> None:
    b64 = c.images.generate(prompt="a lighthouse", size="256x256", response_format="b64_json")
    assert b64.data
    assert b64.data[0].b64_json
    image = Image.open(io.BytesIO(base64.b64decode(b64.data[0].b64_json)))
    assert (image.format, image.size) == ("PNG", (256, 256)), (image.format, image.size)
    url = c.images.generate(prompt="a lighthouse", size="256x256", response_format="url")
    assert url.data
    assert url.data[0].url
    link = url.data[0].url
    # IMAGES_PUBLIC_BASE_URL follows GATEWAY_HOST_PORT: the link works from the host side.
    port = GATEWAY.rsplit(":", 1)[1]
    assert link.startswith(f"http://localhost:{port}/services/images/"), link
    fetched = httpx.get(link, timeout=30)  # a capability URL: no bearer
    assert fetched.status_code == 200, fetched.status_code
    assert Image.open(io.BytesIO(fetched.content)).size == (256, 256)


def check_speech(c: openai.OpenAI) -> None:
    for fmt in ("mp3", "wav"):
        audio = c.audio.speech.create(model="tts-1", voice="alloy", input=SAY, response_format=fmt)
        samples, rate = soundfile.read(io.BytesIO(audio.content), dtype="float32", always_2d=True)
        mono = samples[:, 0]
        seconds = len(mono) / rate
        assert 1.0 <= seconds <= 8.0, f"{fmt}: {seconds:.2f} s"
        assert float(np.sqrt(np.mean(np.square(mono)))) > 0.01, f"{fmt}: silent"
        assert tonality(mono, int(rate)) < 0.6, f"{fmt}: a tone, not speech (stub backend?)"


def check_echo(c: openai.OpenAI) -> None:
    def echo(path: str) -> str:
        headers = {"Authorization": f"Bearer {KEY}"}
        response = httpx.post(f"{GATEWAY}{path}", json={"message": "hi"}, headers=headers)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
        body = response.json()
        assert body["message"] == "hi", body
        return str(body["service"])

    # /v1/echo is advertised by template, acme and beta: the first by name answers, always.
    assert echo("/v1/echo") == "acme"
    for name in ("template", "acme", "beta"):
        assert echo(f"/services/{name}/v1/echo") == name


def check_routes(c: openai.OpenAI) -> None:
    routes = admin("/v1/routes").json()["data"]
    paths = {(r["method"], r["path"]) for r in routes if r["targets"]}
    for expected in (
        ("POST", "/v1/chat/completions"), ("POST", "/v1/images/generations"),
        ("POST", "/v1/audio/speech"), ("POST", "/v1/echo"),
        ("POST", "/services/acme/v1/echo"), ("POST", "/services/beta/v1/echo"),
    ):  # fmt: skip
        assert expected in paths, expected
    echo = next(r for r in routes if (r["method"], r["path"]) == ("POST", "/v1/echo"))
    assert {t["service"] for t in echo["targets"]} == {"acme", "beta", "template"}


CHECKS: list[tuple[str, Check]] = [
    ("models list", check_models),
    ("chat plain and streamed (fake Ollama)", check_chat),
    ("images b64 and url", check_images),
    ("speech mp3 and wav, real speech", check_speech),
    ("echo: template, acme, beta; shared path deterministic", check_echo),
    ("/v1/routes", check_routes),
]


def run_stack() -> int:
    failed = 0
    with client() as c:
        for name, check in CHECKS:
            try:
                check(c)
            except Exception:
                failed += 1
                print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
            else:
                print(f"ok   {name}", flush=True)
    print(f"compose checks: {len(CHECKS) - failed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


def wait_for_speech(timeout_s: float = 180.0) -> int:
    deadline = time.monotonic() + timeout_s
    last = ""
    with client() as c:
        while time.monotonic() < deadline:
            try:
                check_speech(c)
            except Exception as exc:
                last = repr(exc)[:300]
                time.sleep(1)
            else:
                print("ok   speech routed again", flush=True)
                return 0
    print(f"FAIL speech not routed within {timeout_s:.0f} s: {last}", flush=True)
    return 1


def instances() -> int:
    data = admin("/v1/services").json()["data"]
    found = {s["name"]: sorted(i["instance_id"] for i in s["instances"]) for s in data}
    print(json.dumps(found, sort_keys=True))
    return 0


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "stack"
    actions = {"stack": run_stack, "speech": wait_for_speech, "instances": instances}
    sys.exit(actions[command]())
