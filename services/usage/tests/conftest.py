"""Fixtures: every test over SQLite (a temp file) and the real PostgreSQL on this machine.

PostgreSQL tests get their own schema (``usage13_<run>_<n>``), dropped afterwards, so they never
touch other workers' tables in the shared ``test`` database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.main import build_app
from app.settings import UsageSettings
from nexus_testing.postgres import POSTGRES_URL, execute, unique_name

INTERNAL_TOKEN = "usage-test-internal-token-0123456789"

MakeSettings = Callable[..., UsageSettings]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, str | None]]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'usage.db'}", None
        return
    schema = unique_name("usage13")
    try:
        yield POSTGRES_URL, schema
    finally:
        await execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


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
