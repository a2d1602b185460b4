"""Login, /v1/auth/me and refresh-token rotation with reuse detection."""

from __future__ import annotations

import httpx
import pytest

from app import sessions
from app.security import now as real_now
from app.settings import AuthSettings

from .conftest import MakeSettings
from .helpers import ADMIN, PASSWORD, assert_error, bearer, create_user, login, serve


async def test_login_returns_a_token_pair(client: httpx.AsyncClient) -> None:
    user = await create_user(client, "dana")
    resp = await client.post("/v1/auth/token", json={"username": "Dana", "password": PASSWORD})
    assert resp.status_code == 200
    assert resp.headers["cache-control"] == "no-store"
    tokens = resp.json()
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    assert tokens["refresh_token"].startswith("nxr-")

    me = await client.get("/v1/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    assert me.json() == {**user, "token_type": "access_token", "key_id": None}


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("dana", "wrong password"),
        ("nobody", PASSWORD),
        ("admin", PASSWORD),  # the bootstrap admin has no password at all
        ("dana' OR '1'='1' --", PASSWORD),
        ('dana"; DROP TABLE users; --', "x"),
        ("%", PASSWORD),
    ],
)
async def test_bad_login_is_one_401(
    client: httpx.AsyncClient, username: str, password: str
) -> None:
    await create_user(client, "dana")
    resp = await client.post("/v1/auth/token", json={"username": username, "password": password})
    error = assert_error(resp, 401, "invalid_credentials")
    assert error["message"] == "Incorrect username or password."
    await login(client, "dana")  # the table is still there


async def test_refresh_rotates(client: httpx.AsyncClient) -> None:
    await create_user(client, "erin")
    first = await login(client, "erin")
    resp = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert resp.status_code == 200
    second = resp.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await client.get("/v1/auth/me", headers=bearer(second["access_token"]))).is_success
    third = await client.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert third.status_code == 200


async def test_reused_refresh_token_revokes_its_family(client: httpx.AsyncClient) -> None:
    await create_user(client, "frank")
    stolen = await login(client, "frank")
    other_session = await login(client, "frank")
    rotated = (
        await client.post("/v1/auth/refresh", json={"refresh_token": stolen["refresh_token"]})
    ).json()

    replay = await client.post("/v1/auth/refresh", json={"refresh_token": stolen["refresh_token"]})
    assert "already used" in assert_error(replay, 401, "invalid_refresh_token")["message"]
    # The legitimate successor is dead too: the whole family is revoked...
    after = await client.post("/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert_error(after, 401, "invalid_refresh_token")
    # ...but another login (another family) is untouched.
    ok = await client.post(
        "/v1/auth/refresh", json={"refresh_token": other_session["refresh_token"]}
    )
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "token", ["nxr-unknown-token-000000000000000", "garbage", "nx-" + "a" * 40, "' OR 1=1 --"]
)
async def test_unknown_refresh_token_is_401(client: httpx.AsyncClient, token: str) -> None:
    resp = await client.post("/v1/auth/refresh", json={"refresh_token": token})
    assert_error(resp, 401, "invalid_refresh_token")


async def test_expired_refresh_token_is_401(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings: AuthSettings = make_settings(jwt_refresh_ttl_s=60)
    async with serve(settings) as client:
        await create_user(client, "gina")
        tokens = await login(client, "gina")
        monkeypatch.setattr(sessions, "now", lambda: real_now() + 61)
        resp = await client.post(
            "/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert_error(resp, 401, "invalid_refresh_token")


async def test_me_with_api_key(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v1/auth/me", headers=ADMIN)
    assert resp.status_code == 200
    body = resp.json()
    assert (body["username"], body["role"], body["token_type"]) == ("admin", "admin", "api_key")
    assert body["key_id"].startswith("key_")
