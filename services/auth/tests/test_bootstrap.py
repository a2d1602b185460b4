"""NEXUS_ADMIN_API_KEY: an admin key with exactly that value, idempotent across restarts."""

from __future__ import annotations

import httpx

from .conftest import MakeSettings
from .helpers import ADMIN, ADMIN_KEY, GATEWAY, assert_error, bearer, create_user, serve

OTHER_KEY = "nx-a-different-bootstrap-key-9876543210"


async def _is_active(client: httpx.AsyncClient, key: str) -> bool:
    resp = await client.post("/v1/auth/introspect", json={"token": key}, headers=GATEWAY)
    return bool(resp.json()["active"])


async def _bootstrap_keys(client: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
    keys = (await client.get("/v1/api-keys", headers=headers)).json()["data"]
    return [k["prefix"] for k in keys if k["name"].startswith("bootstrap")]


async def test_admin_key_works_from_startup(client: httpx.AsyncClient) -> None:
    me = (await client.get("/v1/auth/me", headers=ADMIN)).json()
    assert (me["username"], me["role"], me["token_type"]) == ("admin", "admin", "api_key")


async def test_idempotent_across_restarts(make_settings: MakeSettings) -> None:
    settings = make_settings()
    for _ in range(3):
        async with serve(settings) as client:
            assert (await client.get("/v1/auth/me", headers=ADMIN)).status_code == 200
    async with serve(settings) as client:
        users = (await client.get("/v1/users", headers=ADMIN)).json()["data"]
        assert [u["username"] for u in users] == ["admin"]
        assert await _bootstrap_keys(client, ADMIN) == [ADMIN_KEY[:9]]


async def test_changing_the_variable_replaces_the_key(make_settings: MakeSettings) -> None:
    async with serve(make_settings()) as client:
        await create_user(client, "keeper", role="admin")
    async with serve(make_settings(nexus_admin_api_key=OTHER_KEY)) as client:
        assert not await _is_active(client, ADMIN_KEY)
        assert await _is_active(client, OTHER_KEY)
        assert await _bootstrap_keys(client, bearer(OTHER_KEY)) == [OTHER_KEY[:9]]
    async with serve(make_settings(nexus_admin_api_key=None)) as client:
        assert not await _is_active(client, OTHER_KEY)
        assert_error(await client.get("/v1/auth/me", headers=bearer(OTHER_KEY)), 401)
        assert len((await client.get("/v1/users", headers=GATEWAY)).json()["error"]) == 4


async def test_revoked_bootstrap_key_returns_on_restart(make_settings: MakeSettings) -> None:
    settings = make_settings()
    async with serve(settings) as client:
        key_id = (await client.get("/v1/auth/me", headers=ADMIN)).json()["key_id"]
        assert (await client.delete(f"/v1/api-keys/{key_id}", headers=ADMIN)).status_code == 200
        assert not await _is_active(client, ADMIN_KEY)
    async with serve(settings) as client:
        me = (await client.get("/v1/auth/me", headers=ADMIN)).json()
        assert me["key_id"] == key_id


async def test_existing_admin_username_is_promoted(make_settings: MakeSettings) -> None:
    async with serve(make_settings()) as client:
        await create_user(client, "boss")
    async with serve(make_settings(nexus_admin_username="boss")) as client:
        me = (await client.get("/v1/auth/me", headers=ADMIN)).json()
        assert (me["username"], me["role"]) == ("boss", "admin")
