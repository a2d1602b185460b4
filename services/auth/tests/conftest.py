"""Fixtures: the same suite over SQLite (a temp file) and the real PostgreSQL on this machine.

PostgreSQL tests each get their own schema (``DATABASE_SCHEMA``), dropped afterwards, so they
never touch other workers' tables in the shared ``test`` database.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.settings import AuthSettings

from .helpers import ADMIN_KEY, INTERNAL_TOKEN, serve

PG_URL = os.environ.get(
    "NEXUS_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
_RUN = secrets.token_hex(4)
_SCHEMAS = itertools.count()

MakeSettings = Callable[..., AuthSettings]


@dataclass(frozen=True)
class Target:
    backend: str
    url: str
    schema: str | None = None


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    if request.param == "sqlite":
        yield Target("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}")
        return
    schema = f"auth_test_{_RUN}_{next(_SCHEMAS)}"
    try:
        yield Target("postgres", PG_URL, schema)
    finally:
        conn = await asyncpg.connect(PG_URL.replace("+asyncpg", ""))
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
def make_settings(database: Target, key_dir: Path) -> MakeSettings:
    def make(**overrides: Any) -> AuthSettings:
        values: dict[str, Any] = {
            "database_url": database.url,
            "database_schema": database.schema,
            "etcd_endpoints": "",
            "nexus_admin_api_key": ADMIN_KEY,
            "nexus_internal_token": INTERNAL_TOKEN,
            "jwt_signing_key_file": key_dir / "signing.pem",
            "jwt_verify_key_files": "",
            # Cheap argon2 so the suite stays fast; never lowered outside tests.
            "password_hash_time_cost": 1,
            "password_hash_memory_kib": 64,
            "password_hash_parallelism": 1,
            "log_level": "WARNING",
        }
        values.update(overrides)
        return AuthSettings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
def settings(make_settings: MakeSettings) -> AuthSettings:
    return make_settings()


@pytest.fixture
async def client(settings: AuthSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(settings) as c:
        yield c
