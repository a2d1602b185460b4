"""The ``openai`` SDK against a real uvicorn running the service: b64_json, url, bad size."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import openai
import pytest

from app.main import build_app
from nexus_testing import UvicornThread, free_port
from tests.conftest import PngDecoder, SchemaCheck, SettingsFactory

pytestmark = pytest.mark.integration


@pytest.fixture
def server(make_settings: SettingsFactory) -> Iterator[UvicornThread]:
    port = free_port()
    # The advertise URL is this server's own, so returned URLs work as given.
    app = build_app(make_settings(service_port=port))
    with UvicornThread(app, port=port) as running:
        yield running


@pytest.fixture
def client(server: UvicornThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_b64_json(client: openai.OpenAI, decode_png: PngDecoder) -> None:
    result = client.images.generate(
        model="dall-e-3", prompt="a lighthouse", size="1024x1792", response_format="b64_json"
    )
    assert result.data is not None
    [image] = result.data
    assert image.b64_json is not None
    assert decode_png(base64.b64decode(image.b64_json)).size == (1024, 1792)


def test_url_fetchable_without_a_bearer(client: openai.OpenAI, decode_png: PngDecoder) -> None:
    result = client.images.generate(prompt="a lighthouse", n=2, size="256x256")
    assert result.data is not None
    assert len(result.data) == 2
    for image in result.data:
        assert image.url is not None
        resp = httpx.get(image.url)
        assert resp.status_code == 200
        assert decode_png(resp.content).size == (256, 256)


def test_raw_response_matches_openai_schema(
    server: UvicornThread, openai_schema: SchemaCheck
) -> None:
    for fmt in ("url", "b64_json"):
        body = {"prompt": "a kite", "size": "256x256", "response_format": fmt}
        resp = httpx.post(f"{server.url}/v1/images/generations", json=body)
        openai_schema("ImagesResponse", resp.json())


@pytest.mark.parametrize("size", ["300x300", "1536x1024"])
def test_bad_size_is_bad_request(client: openai.OpenAI, size: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="a lighthouse", size=size)
    assert caught.value.param == "size"  # type: ignore[attr-defined]


def test_empty_prompt_is_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.images.generate(prompt="")
