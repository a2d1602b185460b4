"""The a1111 backend against a fake AUTOMATIC1111 web UI on loopback."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from PIL import Image

from app.main import build_app
from nexus_testing import UvicornThread, free_port
from tests.conftest import ClientFactory, PngDecoder, SettingsFactory

pytestmark = pytest.mark.integration
GENERATE = "/v1/images/generations"


def _encoded(width: int, height: int, fmt: str) -> str:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format=fmt)
    return base64.b64encode(out.getvalue()).decode()


def fake_a1111(seen: list[dict[str, Any]]) -> FastAPI:
    """Answers like the web UI; the prompt picks a misbehaviour to test the conversion."""
    app = FastAPI()

    @app.get("/sdapi/v1/options")
    async def options() -> dict[str, Any]:
        return {"sd_model_checkpoint": "sd_xl_base_1.0.safetensors"}

    @app.post("/sdapi/v1/txt2img")
    async def txt2img(request: Request) -> Any:
        payload = await request.json()
        seen.append(payload)
        count, prompt = payload["n_iter"] * payload["batch_size"], payload["prompt"]
        if prompt == "explode":
            return Response("CUDA out of memory", status_code=500)
        if prompt == "garbage":
            return {"images": ["bm90IGFuIGltYWdl"]}
        if prompt == "jpeg":
            return {"images": [_encoded(64, 64, "JPEG")] * count}
        return {"images": [_encoded(payload["width"], payload["height"], "PNG")] * count}

    return app


@pytest.fixture
def upstream() -> Iterator[tuple[UvicornThread, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    with UvicornThread(fake_a1111(seen)) as server:
        yield server, seen


async def test_forwards_and_converts(
    upstream: tuple[UvicornThread, list[dict[str, Any]]],
    make_settings: SettingsFactory, open_client: ClientFactory, decode_png: PngDecoder,
) -> None:  # fmt: skip
    server, seen = upstream
    settings = make_settings(
        images_backend="a1111", images_upstream_url=server.url, images_model="sdxl",
        images_steps=12,
    )  # fmt: skip
    async with open_client(build_app(settings)) as client:
        ready = await client.get("/readyz")
        doc = (await client.get("/v1/metadata")).json()
        body = {"prompt": "a fox", "n": 2, "size": "512x512", "response_format": "b64_json"}
        resp = await client.post(GENERATE, json=body)
        jpeg = await client.post(GENERATE, json={**body, "prompt": "jpeg", "size": "256x256"})
    assert ready.status_code == 200
    assert "sd_xl_base_1.0" in ready.json()["checks"]["backend"]["detail"]
    assert doc["options"]["backend"] == "a1111"
    assert "sdxl" in [m["id"] for m in doc["models"]]
    assert resp.status_code == 200
    assert [decode_png(d["b64_json"]).size for d in resp.json()["data"]] == [(512, 512)] * 2
    sent = seen[0]
    assert (sent["prompt"], sent["width"], sent["height"]) == ("a fox", 512, 512)
    assert (sent["n_iter"], sent["batch_size"], sent["steps"]) == (2, 1, 12)
    # A JPEG of another size comes back as a PNG of the asked size.
    assert [decode_png(d["b64_json"]).size for d in jpeg.json()["data"]] == [(256, 256)] * 2


@pytest.mark.parametrize("prompt", ["explode", "garbage"])
async def test_upstream_failures_are_502(
    upstream: tuple[UvicornThread, list[dict[str, Any]]],
    make_settings: SettingsFactory, open_client: ClientFactory, prompt: str,
) -> None:  # fmt: skip
    settings = make_settings(images_backend="a1111", images_upstream_url=upstream[0].url)
    async with open_client(build_app(settings)) as client:
        resp = await client.post(GENERATE, json={"prompt": prompt, "size": "256x256"})
        assert resp.status_code == 502
        assert resp.json()["error"]["type"] == "upstream_error"
        again = await client.post(GENERATE, json={"prompt": "fine", "size": "256x256"})
        assert again.status_code == 200


async def test_upstream_down_is_not_ready_and_502(
    make_settings: SettingsFactory, open_client: ClientFactory
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = make_settings(images_backend="a1111", images_upstream_url=dead)
    async with open_client(build_app(settings)) as client:
        ready = await client.get("/readyz")
        resp = await client.post(GENERATE, json={"prompt": "a fox", "size": "256x256"})
    assert ready.status_code == 503
    assert "does not answer" in ready.json()["checks"]["backend"]["detail"]
    assert resp.status_code == 502
    assert "unreachable" in resp.json()["error"]["message"]
