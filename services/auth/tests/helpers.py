"""Shared test helpers: credentials, error-envelope checks, common calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from app.main import build_app
from app.settings import AuthSettings
from nexus_testing.openai_schema import assert_openai_schema

ADMIN_KEY = "nx-test-bootstrap-admin-key-0123456789"
INTERNAL_TOKEN = "gateway-internal-token-0123456789"
PASSWORD = "correct horse battery staple"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_KEY)
GATEWAY = bearer(INTERNAL_TOKEN)




def assert_error(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """A clean error: the expected status, the OpenAI ``ErrorResponse`` shape, and the code."""
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert_openai_schema("ErrorResponse", body)
    if code is not None:
        assert body["error"]["code"] == code, body
    error: dict[str, Any] = body["error"]
    return error


async def create_user(
    client: httpx.AsyncClient, username: str, role: str = "user", password: str = PASSWORD
) -> dict[str, Any]:
    resp = await client.post(
        "/v1/users", json={"username": username, "password": password, "role": role}, headers=ADMIN
    )
    assert resp.status_code == 201, resp.text
    user: dict[str, Any] = resp.json()
    return user


async def login(
    client: httpx.AsyncClient, username: str, password: str = PASSWORD
) -> dict[str, Any]:
    resp = await client.post("/v1/auth/token", json={"username": username, "password": password})
    assert resp.status_code == 200, resp.text
    tokens: dict[str, Any] = resp.json()
    return tokens


async def create_key(
    client: httpx.AsyncClient, headers: dict[str, str], name: str = "k", **extra: Any
) -> dict[str, Any]:
    resp = await client.post("/v1/api-keys", json={"name": name, **extra}, headers=headers)
    assert resp.status_code == 201, resp.text
    key: dict[str, Any] = resp.json()
    return key


@asynccontextmanager
async def serve(settings: AuthSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process, started and stopped (a 'restart' is a second ``serve``)."""
    app = build_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://auth") as client:
            yield client
