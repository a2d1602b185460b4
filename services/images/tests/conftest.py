"""Fixtures shared by the images tests: settings, an in-process client, OpenAI's schemas."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from jsonschema import Draft202012Validator
from PIL import Image

from app.settings import ImagesSettings
from nexus_testing.openai_schema import components as openai_components

# OpenAI's published OpenAPI document lies in shared/, beside the repository.

SettingsFactory = Callable[..., ImagesSettings]
ClientFactory = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]
SchemaCheck = Callable[[str, Any], None]
PngDecoder = Callable[[str | bytes], Image.Image]


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    """Explicit settings: no .env file, no etcd, files under the test's temp dir."""

    def build(**overrides: Any) -> ImagesSettings:
        values: dict[str, Any] = {"etcd_endpoints": "", "images_files_dir": str(tmp_path)}
        values.update(overrides)
        return ImagesSettings(_env_file=None, **values)

    return build


@pytest.fixture
def open_client() -> ClientFactory:
    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
        async with (
            LifespanManager(app) as manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://images.test"
            ) as client,
        ):
            yield client

    return run




@pytest.fixture(scope="session")
def openai_schema() -> SchemaCheck:
    """Validate a document against one of OpenAI's component schemas (JSON Schema 2020-12)."""

    def check(name: str, document: Any) -> None:
        schema = {"$ref": f"#/components/schemas/{name}", "components": openai_components()}
        Draft202012Validator(schema).validate(document)

    return check


def _png_of(b64_or_bytes: str | bytes) -> Image.Image:
    """Open a PNG given as base64 text or raw bytes, insisting that it is a PNG."""
    raw = base64.b64decode(b64_or_bytes) if isinstance(b64_or_bytes, str) else b64_or_bytes
    image = Image.open(io.BytesIO(raw))
    image.load()
    assert image.format == "PNG"
    return image


@pytest.fixture
def decode_png() -> PngDecoder:
    return _png_of
