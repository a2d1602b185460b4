"""The database: one async engine, schema migrated with Alembic at startup.

SQLite (aiosqlite) by default, PostgreSQL (asyncpg) when ``DATABASE_URL`` says so; with
``DATABASE_SCHEMA`` on PostgreSQL the table lives in that schema (created if missing). The
migrations (``app/migrations``) run on the engine's own connection, to head, before the
service reports ready; running them on an up-to-date database does nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from nexus_kit import CheckResult
from nexus_kit.database import engine_options

MIGRATIONS = Path(__file__).with_name("migrations")


class Database:
    def __init__(self, url: str, schema: str | None = None) -> None:
        self.url = url
        self.schema = None if url.startswith("sqlite") else schema
        self.engine: AsyncEngine = create_async_engine(url, **engine_options(url, self.schema))
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        if url.startswith("sqlite"):
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self) -> AsyncSession:
        return self.sessions()

    async def migrate(self) -> None:
        async with self.engine.begin() as conn:
            if self.schema:
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
            await conn.run_sync(_upgrade, self.schema)

    async def ping(self) -> CheckResult:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return CheckResult(True, self.dialect)

    async def close(self) -> None:
        await self.engine.dispose()


def alembic_config(connection: Connection | None = None, schema: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    return config


def _upgrade(connection: Connection, schema: str | None) -> None:
    command.upgrade(alembic_config(connection, schema), "head")


def sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)



def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
