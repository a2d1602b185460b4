"""Token quotas are key fields: set at creation, admin-editable, carried in introspection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from .conftest import MakeSettings
from .helpers import ADMIN, INTERNAL_TOKEN, bearer, create_key, create_user, serve

QUOTAS = {"rate_limit_tpm": 1000, "token_budget_daily": 50_000, "token_budget_monthly": 10**6}


async def _introspect(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    resp = await client.post(
        "/v1/auth/introspect", json={"token": token}, headers=bearer(INTERNAL_TOKEN)
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_quotas_set_at_creation_are_introspected(client: httpx.AsyncClient) -> None:
    key = await create_key(client, ADMIN, "k", **QUOTAS)
    assert {k: key[k] for k in QUOTAS} == QUOTAS
    found = await _introspect(client, key["key"])
    assert {k: found[k] for k in QUOTAS} == QUOTAS


async def test_admins_edit_quotas_and_null_clears(client: httpx.AsyncClient) -> None:
    user = await create_user(client, "tess")
    key = await create_key(client, ADMIN, user_id=user["id"], rate_limit_rpm=5)
    resp = await client.patch(
        f"/v1/api-keys/{key['id']}", json={"rate_limit_tpm": 20}, headers=ADMIN
    )
    assert resp.status_code == 200, resp.text
    assert (resp.json()["rate_limit_tpm"], resp.json()["rate_limit_rpm"]) == (20, 5)
    found = await _introspect(client, key["key"])
    assert found["rate_limit_tpm"] == 20
    cleared = await client.patch(
        f"/v1/api-keys/{key['id']}", json={"rate_limit_tpm": None}, headers=ADMIN
    )
    assert cleared.json()["rate_limit_tpm"] is None
    assert (await _introspect(client, key["key"]))["rate_limit_tpm"] is None


async def test_users_cannot_raise_their_own_quota(client: httpx.AsyncClient) -> None:
    user = await create_user(client, "uma")
    own = await create_key(client, ADMIN, user_id=user["id"])
    resp = await client.patch(
        f"/v1/api-keys/{own['id']}", json={"rate_limit_tpm": 10**9}, headers=bearer(own["key"])
    )
    assert resp.status_code == 403


@pytest.mark.parametrize(
    "body",
    [{"rate_limit_tpm": 0}, {"token_budget_daily": -5}, {"token_budget_monthly": "lots"},
     {"rate_limit_tpm": 10**16}, {"unknown": 1}],
)  # fmt: skip
async def test_bad_quota_values_are_400(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    key = await create_key(client, ADMIN)
    resp = await client.patch(f"/v1/api-keys/{key['id']}", json=body, headers=ADMIN)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == next(iter(body))
    created = await client.post("/v1/api-keys", json={"name": "k", **body}, headers=ADMIN)
    assert created.status_code == 400


async def test_unknown_key_is_404(client: httpx.AsyncClient) -> None:
    resp = await client.patch("/v1/api-keys/key_nope", json={"rate_limit_tpm": 1}, headers=ADMIN)
    assert resp.status_code == 404


async def test_a_database_from_before_quotas_gains_the_columns(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the api_keys table as the first release made it
        conn.execute(sa.text(
            "CREATE TABLE api_keys (id VARCHAR(40) PRIMARY KEY, user_id VARCHAR(40), "
            "name VARCHAR(128), key_hash VARCHAR(64) UNIQUE, prefix VARCHAR(16), "
            "rate_limit_rpm INTEGER, bootstrap BOOLEAN, created_at BIGINT, revoked_at BIGINT)"
        ))  # fmt: skip
    engine.dispose()
    settings = make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'old.db'}",
                             database_schema=None)  # fmt: skip
    async with serve(settings) as client:
        key = await create_key(client, ADMIN, rate_limit_tpm=7)
        assert (await _introspect(client, key["key"]))["rate_limit_tpm"] == 7
