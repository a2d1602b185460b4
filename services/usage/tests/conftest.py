"""Fixtures: every test over SQLite (a temp file) and the real PostgreSQL on this machine.

PostgreSQL tests get their own schema (``usage13_<run>_<n>``), dropped afterwards, so they never
touch other workers' tables in the shared ``test`` database.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.main import build_app
from app.settings import UsageSettings

PG_URL = os.environ.get(
    "NEXUS_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
INTERNAL_TOKEN = "usage-test-internal-token-0123456789"
_RUN = secrets.token_hex(4)
_SCHEMAS = itertools.count()

MakeSettings = Callable[..., UsageSettings]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, str | None]]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'usage.db'}", None
        return
    schema = f"usage13_{_RUN}_{next(_SCHEMAS)}"
    try:
        yield PG_URL, schema
    finally:
        conn = await asyncpg.connect(PG_URL.replace("+asyncpg", ""))
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
def make_settings(database: tuple[str, str | None]) -> MakeSettings:
    def make(**overrides: Any) -> UsageSettings:
        values: dict[str, Any] = {
            "database_url": database[0],
            "database_schema": database[1],
            "etcd_endpoints": "",
            "nexus_internal_token": INTERNAL_TOKEN,
            "log_level": "WARNING",
        }
        values.update(overrides)
        return UsageSettings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@asynccontextmanager
async def serve(settings: UsageSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process, started and stopped (a 'restart' is a second ``serve``)."""
    app = build_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://usage") as client:
            yield client


@pytest.fixture
async def client(make_settings: MakeSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(make_settings()) as c:
        yield c
