"""Fixtures: the same suite over SQLite (a temp file) and the real PostgreSQL on this machine.

PostgreSQL tests each get their own schema (``DATABASE_SCHEMA``), dropped afterwards, so they
never touch other workers' tables in the shared ``test`` database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.settings import AuthSettings
from nexus_testing.postgres import POSTGRES_URL, execute, unique_name

from .helpers import ADMIN_KEY, INTERNAL_TOKEN, serve

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
    schema = unique_name("auth_test")
    try:
        yield Target("postgres", POSTGRES_URL, schema)
    finally:
        await execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


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
