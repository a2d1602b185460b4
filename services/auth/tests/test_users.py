"""Users: admins create and list them; usernames are validated and unique."""

from __future__ import annotations

import httpx
import pytest

from .helpers import ADMIN, PASSWORD, assert_error, bearer, create_key, create_user


async def test_admin_creates_and_lists_users(client: httpx.AsyncClient) -> None:
    alice = await create_user(client, "Alice")
    assert alice["username"] == "alice"  # usernames are case-insensitive, stored lower-case
    assert alice["role"] == "user"
    assert alice["id"].startswith("usr_")
    assert set(alice) == {"object", "id", "username", "role", "created_at"}
    await create_user(client, "root2", role="admin")

    resp = await client.get("/v1/users", headers=ADMIN)
    assert resp.status_code == 200
    names = {u["username"]: u["role"] for u in resp.json()["data"]}
    assert names == {"admin": "admin", "alice": "user", "root2": "admin"}
    assert "password" not in resp.text
    assert "hash" not in resp.text


async def test_duplicate_username_is_409(client: httpx.AsyncClient) -> None:
    await create_user(client, "bob")
    resp = await client.post(
        "/v1/users", json={"username": "BOB", "password": PASSWORD}, headers=ADMIN
    )
    assert assert_error(resp, 409, "conflict")["param"] == "username"


async def test_users_are_admin_only(client: httpx.AsyncClient) -> None:
    await create_user(client, "carol")
    user_key = (await create_key(client, ADMIN, user_id=(await _id(client, "carol"))))["key"]
    body = {"username": "mallory", "password": PASSWORD}
    assert_error(await client.post("/v1/users", json=body, headers=bearer(user_key)), 403)
    assert_error(await client.get("/v1/users", headers=bearer(user_key)), 403, "permission_denied")
    assert_error(await client.post("/v1/users", json=body), 401, "invalid_api_key")
    assert_error(await client.get("/v1/users"), 401, "invalid_api_key")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"username": "x", "password": "short"}, "password"),
        ({"username": "x", "password": PASSWORD, "role": "root"}, "role"),
        ({"username": "", "password": PASSWORD}, "username"),
        ({"username": "a" * 65, "password": PASSWORD}, "username"),
        ({"username": "robert'); DROP TABLE users;--", "password": PASSWORD}, "username"),
        ({"username": "x' OR '1'='1", "password": PASSWORD}, "username"),
        ({"username": "x", "password": PASSWORD, "is_admin": True}, "is_admin"),
        ({"password": PASSWORD}, "username"),
    ],
)
async def test_bad_user_bodies_are_400(
    client: httpx.AsyncClient, body: dict[str, object], param: str
) -> None:
    resp = await client.post("/v1/users", json=body, headers=ADMIN)
    assert assert_error(resp, 400)["param"] == param
    listed = (await client.get("/v1/users", headers=ADMIN)).json()["data"]
    assert [u["username"] for u in listed] == ["admin"]  # nothing created, nothing dropped


async def _id(client: httpx.AsyncClient, username: str) -> str:
    users = (await client.get("/v1/users", headers=ADMIN)).json()["data"]
    return next(str(u["id"]) for u in users if u["username"] == username)
