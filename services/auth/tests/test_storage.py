"""What is at rest: no plaintext password, API key or refresh token in any row."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from app.db import Database
from app.models import Base
from app.settings import AuthSettings

from .helpers import ADMIN, ADMIN_KEY, create_key, create_user, login

SECRET_PASSWORDS = ["first-secret-password-1", "second-secret-password-2"]


async def _all_cells(settings: AuthSettings) -> list[str]:
    db = Database(settings.database_url, settings.database_schema)
    cells: list[str] = []
    try:
        async with db.session() as session:
            for table in Base.metadata.sorted_tables:
                for row in (await session.execute(select(table))).all():
                    cells.extend(str(value) for value in row)
    finally:
        await db.close()
    return cells


async def test_no_plaintext_secrets_in_the_database(
    client: httpx.AsyncClient, settings: AuthSettings
) -> None:
    secrets: list[str] = [ADMIN_KEY, *SECRET_PASSWORDS]
    for i, password in enumerate(SECRET_PASSWORDS):
        user = await create_user(client, f"user{i}", password=password)
        secrets.append((await create_key(client, ADMIN, user_id=user["id"]))["key"])
        tokens: dict[str, Any] = await login(client, f"user{i}", password)
        secrets.append(tokens["refresh_token"])
        refreshed = await client.post(
            "/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        secrets.append(refreshed.json()["refresh_token"])

    cells = await _all_cells(settings)
    assert len(cells) > 20
    for secret in secrets:
        body = secret.removeprefix("nx-").removeprefix("nxr-")
        leaks = [cell for cell in cells if body in cell or secret in cell]
        assert leaks == [], f"plaintext secret found at rest: {secret[:6]}..."
    hashes = [cell for cell in cells if cell.startswith("$argon2")]
    assert len(hashes) == 2
    assert all(h.startswith("$argon2id$") for h in hashes)
