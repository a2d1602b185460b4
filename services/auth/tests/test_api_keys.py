"""API keys: shown once, listed without secrets, scoped to their owner, revocable."""

from __future__ import annotations

import httpx
import pytest

from .helpers import ADMIN, assert_error, bearer, create_key, create_user, login


async def _user_headers(client: httpx.AsyncClient, username: str) -> dict[str, str]:
    await create_user(client, username)
    return bearer((await login(client, username))["access_token"])


async def test_create_shows_the_key_once(client: httpx.AsyncClient) -> None:
    headers = await _user_headers(client, "hank")
    resp = await client.post(
        "/v1/api-keys", json={"name": "laptop", "rate_limit_rpm": 3}, headers=headers
    )
    assert resp.status_code == 201
    assert resp.headers["cache-control"] == "no-store"
    key = resp.json()
    assert key["key"].startswith("nx-")
    assert len(key["key"]) >= 35
    assert key["id"].startswith("key_")
    assert (key["name"], key["rate_limit_rpm"]) == ("laptop", 3)
    assert key["prefix"] == key["key"][:9]
    assert isinstance(key["created_at"], int)

    me = (await client.get("/v1/auth/me", headers=bearer(key["key"]))).json()
    assert (me["username"], me["token_type"], me["key_id"]) == ("hank", "api_key", key["id"])


async def test_listing_never_shows_secrets(client: httpx.AsyncClient) -> None:
    headers = await _user_headers(client, "ivy")
    created = [await create_key(client, headers, name=f"k{i}") for i in range(2)]
    resp = await client.get("/v1/api-keys", headers=headers)
    assert resp.status_code == 200
    listed = resp.json()["data"]
    assert {k["id"] for k in listed} == {k["id"] for k in created}
    for item in listed:
        assert "key" not in item
        assert "key_hash" not in item
    for key in created:
        assert key["key"] not in resp.text


async def test_users_see_their_own_keys_and_admins_all(client: httpx.AsyncClient) -> None:
    jack = await _user_headers(client, "jack")
    kate = await _user_headers(client, "kate")
    jack_key = await create_key(client, jack)
    kate_key = await create_key(client, kate)

    jack_ids = {k["id"] for k in (await client.get("/v1/api-keys", headers=jack)).json()["data"]}
    assert jack_ids == {jack_key["id"]}
    all_ids = {k["id"] for k in (await client.get("/v1/api-keys", headers=ADMIN)).json()["data"]}
    assert {jack_key["id"], kate_key["id"]} <= all_ids
    only_kate = await client.get(
        "/v1/api-keys", params={"user_id": kate_key["user_id"]}, headers=ADMIN
    )
    assert [k["id"] for k in only_kate.json()["data"]] == [kate_key["id"]]
    snoop = await client.get("/v1/api-keys", params={"user_id": kate_key["user_id"]}, headers=jack)
    assert_error(snoop, 403, "permission_denied")


async def test_revoked_key_stops_working(client: httpx.AsyncClient) -> None:
    headers = await _user_headers(client, "liam")
    key = await create_key(client, headers)
    resp = await client.delete(f"/v1/api-keys/{key['id']}", headers=headers)
    assert resp.status_code == 200
    assert resp.json() == {"object": "api_key.deleted", "id": key["id"], "deleted": True}

    assert_error(
        await client.get("/v1/auth/me", headers=bearer(key["key"])), 401, "invalid_api_key"
    )
    assert (await client.get("/v1/api-keys", headers=headers)).json()["data"] == []
    again = await client.delete(f"/v1/api-keys/{key['id']}", headers=headers)
    assert_error(again, 404, "not_found")


async def test_only_owner_or_admin_revokes(client: httpx.AsyncClient) -> None:
    mia = await _user_headers(client, "mia")
    noah = await _user_headers(client, "noah")
    key = await create_key(client, mia)
    assert_error(await client.delete(f"/v1/api-keys/{key['id']}", headers=noah), 404)
    assert (await client.get("/v1/auth/me", headers=bearer(key["key"]))).status_code == 200
    assert (await client.delete(f"/v1/api-keys/{key['id']}", headers=ADMIN)).status_code == 200
    assert_error(await client.get("/v1/auth/me", headers=bearer(key["key"])), 401)


async def test_admin_creates_keys_for_others_users_cannot(client: httpx.AsyncClient) -> None:
    olga = await create_user(client, "olga")
    pete = await _user_headers(client, "pete")
    key = await create_key(client, ADMIN, user_id=olga["id"])
    assert key["user_id"] == olga["id"]
    me = (await client.get("/v1/auth/me", headers=bearer(key["key"]))).json()
    assert me["username"] == "olga"
    body = {"name": "sneaky", "user_id": olga["id"]}
    assert_error(await client.post("/v1/api-keys", json=body, headers=pete), 403)
    missing = {"name": "x", "user_id": "usr_" + "0" * 24}
    assert (
        assert_error(await client.post("/v1/api-keys", json=missing, headers=ADMIN), 404)["param"]
        == "user_id"
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x", "rate_limit_rpm": 0}, "rate_limit_rpm"),
        ({"name": "x", "rate_limit_rpm": "many"}, "rate_limit_rpm"),
        ({"name": "x", "key": "nx-choose-my-own-key-000000000"}, "key"),
    ],
)
async def test_bad_key_bodies_are_400(
    client: httpx.AsyncClient, body: dict[str, object], param: str
) -> None:
    resp = await client.post("/v1/api-keys", json=body, headers=ADMIN)
    assert assert_error(resp, 400)["param"] == param


@pytest.mark.parametrize("key_id", ["key_doesnotexist", "1' OR '1'='1", "%25", "x" * 64])
async def test_deleting_unknown_ids_is_404(client: httpx.AsyncClient, key_id: str) -> None:
    assert_error(await client.delete(f"/v1/api-keys/{key_id}", headers=ADMIN), 404)
    assert len((await client.get("/v1/api-keys", headers=ADMIN)).json()["data"]) == 1
