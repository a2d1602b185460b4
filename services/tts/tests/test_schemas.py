"""Every invalid field of a speech request is a 400 envelope naming the ``param``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app import encoding
from tests.tts_support import check_openai_schema

GOOD = {"model": "tts-1", "input": "Hello there.", "voice": "alloy"}
REMOVE = object()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", REMOVE),
        ("model", ""),
        ("model", 7),
        ("input", REMOVE),
        ("input", ""),
        ("input", "   \n\t"),
        ("input", "x" * 4097),
        ("input", ["a list"]),
        ("voice", REMOVE),
        ("voice", "bob"),
        ("voice", {"id": "voice_1234"}),
        ("voice", "ALLOY"),
        ("response_format", "mp4"),
        ("response_format", "MP3"),
        ("speed", 0.2),
        ("speed", 4.5),
        ("speed", "fast"),
        ("speed", None),
        ("stream_format", "chunks"),
        ("instructions", "x" * 4097),
        ("temperature", 0.5),
    ],
)
async def test_invalid_field_is_400_naming_param(
    client: httpx.AsyncClient, field: str, value: Any
) -> None:
    body = dict(GOOD)
    if value is REMOVE:
        del body[field]
    else:
        body[field] = value
    response = await client.post("/v1/audio/speech", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field
    assert error["type"] == "invalid_request_error"
    check_openai_schema("ErrorResponse", response.json())


async def test_input_of_exactly_4096_chars_is_accepted(client: httpx.AsyncClient) -> None:
    body = {**GOOD, "input": ("word " * 820)[:4096], "response_format": "pcm"}
    response = await client.post("/v1/audio/speech", json=body)
    assert response.status_code == 200


async def test_body_that_is_not_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/audio/speech", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


async def test_unknown_model_is_404_model_not_found(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/audio/speech", json={**GOOD, "model": "dall-e-3"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("model_not_found", "model")


@pytest.mark.parametrize("model", ["tts-1", "tts-1-hd", "gpt-4o-mini-tts", "stub"])
async def test_advertised_models_are_accepted(client: httpx.AsyncClient, model: str) -> None:
    body = {**GOOD, "model": model, "response_format": "pcm"}
    assert (await client.post("/v1/audio/speech", json=body)).status_code == 200


async def test_a_format_without_its_encoder_is_400_naming_available_formats(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on an FFmpeg build without the AAC encoder.
    real = encoding.has_encoder
    monkeypatch.setattr(encoding, "has_encoder", lambda name: name != "aac" and real(name))
    client, _ = await make_client()
    response = await client.post("/v1/audio/speech", json={**GOOD, "response_format": "aac"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "response_format"
    assert "mp3, opus, flac, wav, pcm" in error["message"]
    readyz = (await client.get("/readyz")).json()
    assert "unavailable: aac" in readyz["checks"]["formats"]["detail"]
