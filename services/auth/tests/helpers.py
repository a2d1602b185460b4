"""Shared test helpers: credentials, error-envelope checks, common calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import yaml
from asgi_lifespan import LifespanManager

from app.main import build_app
from app.settings import AuthSettings

ADMIN_KEY = "nx-test-bootstrap-admin-key-0123456789"
INTERNAL_TOKEN = "gateway-internal-token-0123456789"
PASSWORD = "correct horse battery staple"
OPENAPI = Path(__file__).resolve().parents[3].parent / "shared" / "openai-openapi.yaml"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_KEY)
GATEWAY = bearer(INTERNAL_TOKEN)


@lru_cache(maxsize=1)
def _error_validator() -> jsonschema.Draft202012Validator:
    with OPENAPI.open() as fh:
        spec = yaml.load(fh, Loader=yaml.CSafeLoader)
    schema = {"$ref": "#/components/schemas/ErrorResponse", "components": spec["components"]}
    return jsonschema.Draft202012Validator(schema)


def assert_error(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """A clean error: the expected status, the OpenAI ``ErrorResponse`` shape, and the code."""
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    _error_validator().validate(body)
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
