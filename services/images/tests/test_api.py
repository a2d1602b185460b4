"""The images API in process: generation, every bad input, metadata, readyz, metrics, files."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from app.backends.stub import render
from app.main import build_app
from app.schemas import MAX_PROMPT_CHARS
from tests.conftest import ClientFactory, PngDecoder, SchemaCheck, SettingsFactory

GENERATE = "/v1/images/generations"


async def test_b64_json_png_of_asked_size(
    make_settings: SettingsFactory, open_client: ClientFactory,
    openai_schema: SchemaCheck, decode_png: PngDecoder,
) -> None:  # fmt: skip
    async with open_client(build_app(make_settings())) as client:
        resp = await client.post(GENERATE, json={
            "prompt": "a red fox", "model": "dall-e-2", "n": 2,
            "size": "512x512", "response_format": "b64_json",
        })  # fmt: skip
    assert resp.status_code == 200
    body = resp.json()
    openai_schema("ImagesResponse", body)
    assert len(body["data"]) == 2
    assert all(decode_png(item["b64_json"]).size == (512, 512) for item in body["data"])
    # The stub is deterministic: the first image is exactly what it draws for this prompt.
    assert base64.b64decode(body["data"][0]["b64_json"]) == render("a red fox", 512, 512)


async def test_defaults_are_one_url_at_default_size(
    make_settings: SettingsFactory, open_client: ClientFactory, decode_png: PngDecoder
) -> None:
    settings = make_settings(images_default_size="256x256")
    async with open_client(build_app(settings)) as client:
        resp = await client.post(GENERATE, json={"prompt": "a quiet harbour"})
        assert resp.status_code == 200
        [item] = resp.json()["data"]
        assert set(item) == {"url"}
        assert item["url"].startswith("http://127.0.0.1:7860/v1/images/files/")
        image = await client.get(item["url"].removeprefix("http://127.0.0.1:7860"))
    assert image.headers["content-type"] == "image/png"
    assert decode_png(image.content).size == (256, 256)


BAD_BODIES: list[tuple[dict[str, Any], str]] = [
    ({}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   \n"}, "prompt"),
    ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt"),
    ({"prompt": 42}, "prompt"),
    ({"prompt": "ok", "n": 0}, "n"),
    ({"prompt": "ok", "n": 11}, "n"),
    ({"prompt": "ok", "n": "2"}, "n"),
    ({"prompt": "ok", "n": 1.5}, "n"),
    ({"prompt": "ok", "size": "300x300"}, "size"),
    ({"prompt": "ok", "size": "auto"}, "size"),
    ({"prompt": "ok", "size": 256}, "size"),
    ({"prompt": "ok", "response_format": "jpeg"}, "response_format"),
    ({"prompt": "ok", "quality": "ultra"}, "quality"),
    ({"prompt": "ok", "style": "baroque"}, "style"),
    ({"prompt": "ok", "user": 7}, "user"),
    ({"prompt": "ok", "model": 3}, "model"),
    ({"prompt": "ok", "output_format": "jpeg"}, "output_format"),
    ({"prompt": "ok", "stream": True}, "stream"),
]


@pytest.mark.parametrize(("body", "param"), BAD_BODIES)
async def test_bad_input_is_400_naming_the_param(
    make_settings: SettingsFactory, open_client: ClientFactory, openai_schema: SchemaCheck,
    body: dict[str, Any], param: str,
) -> None:  # fmt: skip
    async with open_client(build_app(make_settings())) as client:
        resp = await client.post(GENERATE, json=body)
    assert resp.status_code == 400
    openai_schema("ErrorResponse", resp.json())
    error = resp.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)


async def test_bad_size_lists_the_allowed_sizes(
    make_settings: SettingsFactory, open_client: ClientFactory
) -> None:
    async with open_client(build_app(make_settings())) as client:
        resp = await client.post(GENERATE, json={"prompt": "ok", "size": "640x480"})
    message = resp.json()["error"]["message"]
    for size in ("256x256", "512x512", "1024x1024", "1792x1024", "1024x1792"):
        assert size in message


async def test_not_json_is_400(make_settings: SettingsFactory, open_client: ClientFactory) -> None:
    async with open_client(build_app(make_settings())) as client:
        resp = await client.post(GENERATE, content=b"{prompt", headers={"content-type": "x"})
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_json"


async def test_unknown_model_is_404(
    make_settings: SettingsFactory, open_client: ClientFactory
) -> None:
    async with open_client(build_app(make_settings())) as client:
        resp = await client.post(GENERATE, json={"prompt": "ok", "model": "gpt-image-1"})
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "model_not_found"
    assert resp.json()["error"]["param"] == "model"


async def test_unknown_fields_of_newer_models_are_ignored(
    make_settings: SettingsFactory, open_client: ClientFactory
) -> None:
    body = {"prompt": "ok", "size": "256x256", "moderation": "low", "safety_identifier": "u1"}
    async with open_client(build_app(make_settings())) as client:
        resp = await client.post(GENERATE, json=body)
    assert resp.status_code == 200


async def test_metadata_lists_endpoints_models_and_options(
    make_settings: SettingsFactory, open_client: ClientFactory
) -> None:
    settings = make_settings(images_model_aliases="dall-e-2, dall-e-3")
    async with open_client(build_app(settings)) as client:
        doc = (await client.get("/v1/metadata")).json()
    endpoints = {e["operation_id"]: e for e in doc["endpoints"]}
    assert endpoints["images.generate"]["path"] == GENERATE
    assert endpoints["images.generate"]["public"] is False
    assert endpoints["images.files.get"]["path"] == "/v1/images/files/{file_id}"
    assert endpoints["images.files.get"]["public"] is True
    assert [m["id"] for m in doc["models"]] == ["dall-e-2", "dall-e-3", "nexus-stub"]
    options = doc["options"]
    assert options["sizes"] == ["256x256", "512x512", "1024x1024", "1792x1024", "1024x1792"]
    assert options["response_formats"] == ["url", "b64_json"]
    assert (options["backend"], options["backend_state"]) == ("stub", "ready")


async def test_readyz_names_the_stub(
    make_settings: SettingsFactory, open_client: ClientFactory
) -> None:
    async with open_client(build_app(make_settings())) as client:
        resp = await client.get("/readyz")
    assert resp.status_code == 200
    assert "stub" in resp.json()["checks"]["backend"]["detail"]


async def test_metrics_count_and_time_generations(
    make_settings: SettingsFactory, open_client: ClientFactory
) -> None:
    async with open_client(build_app(make_settings())) as client:
        body = {"prompt": "ok", "size": "256x256", "n": 3, "response_format": "b64_json"}
        assert (await client.post(GENERATE, json=body)).status_code == 200
        text = (await client.get("/metrics")).text
    assert 'nexus_images_generations_total{backend="stub",outcome="ok"} 1.0' in text
    assert 'nexus_images_images_total{backend="stub"} 3.0' in text
    assert 'nexus_images_generation_duration_seconds_count{backend="stub"} 1.0' in text
    assert 'nexus_images_pending_generations{backend="stub"} 0.0' in text
