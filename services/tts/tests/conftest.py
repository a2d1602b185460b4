"""Fixtures: an in-process app (ASGI transport, lifespan run) built from explicit settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.backends import TTSBackend
from app.main import build_app
from app.settings import TTSSettings
from tests.tts_support import make_settings

AppFactory = Callable[..., Awaitable[tuple[httpx.AsyncClient, FastAPI]]]


@pytest.fixture
async def make_client() -> AsyncIterator[AppFactory]:
    """``await make_client(settings=..., backend=...)`` → a client of a started app."""
    async with AsyncExitStack() as stack:

        async def factory(
            settings: TTSSettings | None = None, backend: TTSBackend | None = None
        ) -> tuple[httpx.AsyncClient, FastAPI]:
            app = build_app(settings or make_settings(), backend=backend)
            await stack.enter_async_context(LifespanManager(app))
            await app.state.tts.engine.wait_settled()
            transport = httpx.ASGITransport(app=app)
            client = httpx.AsyncClient(transport=transport, base_url="http://tts")
            await stack.enter_async_context(client)
            return client, app

        yield factory


@pytest.fixture
async def client(make_client: AppFactory) -> httpx.AsyncClient:
    """A client of the app on the stub backend."""
    stub_client, _ = await make_client()
    return stub_client
