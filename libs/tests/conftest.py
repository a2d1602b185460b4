from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI

from nexus_kit import ServiceSettings, create_app
from nexus_testing.openai_schema import assert_openai_schema


@pytest.fixture
def settings() -> ServiceSettings:
    return ServiceSettings(service_name="kit-test", service_port=9999, etcd_endpoints="")


@pytest.fixture
def make_client() -> Callable[..., Any]:
    async def _make(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://kit") as client:
                yield client

    return _make


@pytest.fixture
async def client(settings: ServiceSettings) -> AsyncIterator[httpx.AsyncClient]:
    from kit_app import demo_router

    app = create_app(settings, description="demo", routers=[demo_router()])
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kit") as c:
            yield c


__all__ = ["APIRouter", "assert_openai_schema"]
