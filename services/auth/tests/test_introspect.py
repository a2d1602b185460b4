"""POST /v1/auth/introspect: for the gateway (NEXUS_INTERNAL_TOKEN) and admins only."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import MakeSettings
from .helpers import (
    ADMIN,
    ADMIN_KEY,
    GATEWAY,
    INTERNAL_TOKEN,
    assert_error,
    bearer,
    create_key,
    create_user,
    login,
    serve,
)

INACTIVE = {
    "active": False, "subject": None, "username": None, "role": None, "token_type": None,
    "key_id": None, "rate_limit_rpm": None, "exp": None,
    "rate_limit_tpm": None, "token_budget_daily": None, "token_budget_monthly": None,
}  # fmt: skip


async def _introspect(
    client: httpx.AsyncClient, token: str, headers: dict[str, str] = GATEWAY
) -> dict[str, Any]:
    resp = await client.post("/v1/auth/introspect", json={"token": token}, headers=headers)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_api_key_is_active_with_its_limit(client: httpx.AsyncClient) -> None:
    user = await create_user(client, "quinn")
    key = await create_key(client, ADMIN, user_id=user["id"], rate_limit_rpm=3)
    assert await _introspect(client, key["key"]) == {
        "active": True, "subject": user["id"], "username": "quinn", "role": "user",
        "token_type": "api_key", "key_id": key["id"], "rate_limit_rpm": 3, "exp": None,
        "rate_limit_tpm": None, "token_budget_daily": None, "token_budget_monthly": None,
    }  # fmt: skip


async def test_access_token_is_active(client: httpx.AsyncClient) -> None:
    user = await create_user(client, "rita", role="admin")
    tokens = await login(client, "rita")
    body = await _introspect(client, tokens["access_token"])
    assert body["active"] is True
    assert (body["subject"], body["role"], body["token_type"]) == (
        user["id"],
        "admin",
        "access_token",
    )
    assert body["key_id"] is None
    assert isinstance(body["exp"], int)


async def test_revoked_unknown_and_garbage_are_inactive(client: httpx.AsyncClient) -> None:
    key = await create_key(client, ADMIN)
    await client.delete(f"/v1/api-keys/{key['id']}", headers=ADMIN)
    for token in [key["key"], "nx-unknownunknownunknownunknown", "garbage", "a.b.c", "' OR 1=1"]:
        assert await _introspect(client, token) == INACTIVE


async def test_admins_may_introspect(client: httpx.AsyncClient) -> None:
    assert (await _introspect(client, ADMIN_KEY, headers=ADMIN))["role"] == "admin"
    admin = await create_user(client, "sam", role="admin")
    jwt_headers = bearer((await login(client, "sam"))["access_token"])
    assert (await _introspect(client, ADMIN_KEY, headers=jwt_headers))["active"] is True
    assert admin["role"] == "admin"


async def test_others_are_refused(client: httpx.AsyncClient) -> None:
    user = await create_user(client, "tina")
    user_key = (await create_key(client, ADMIN, user_id=user["id"]))["key"]
    body = {"token": ADMIN_KEY}
    url = "/v1/auth/introspect"
    assert_error(await client.post(url, json=body, headers=bearer(user_key)), 403)
    assert_error(await client.post(url, json=body), 401, "invalid_api_key")
    wrong = bearer(INTERNAL_TOKEN + "x")
    assert_error(await client.post(url, json=body, headers=wrong), 401, "invalid_api_key")


@pytest.mark.parametrize("body", [{}, {"token": ""}, {"token": "x" * 5000}, {"tok": "x"}])
async def test_bad_introspect_bodies_are_400(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    resp = await client.post("/v1/auth/introspect", json=body, headers=GATEWAY)
    assert_error(resp, 400)


async def test_without_internal_token_only_admins(make_settings: MakeSettings) -> None:
    async with serve(make_settings(nexus_internal_token=None)) as client:
        resp = await client.post("/v1/auth/introspect", json={"token": ADMIN_KEY}, headers=GATEWAY)
        assert_error(resp, 401, "invalid_api_key")
        assert (await _introspect(client, ADMIN_KEY, headers=ADMIN))["active"] is True
