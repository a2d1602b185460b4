"""The database: one async SQLAlchemy engine and session factory, schema created at startup.

SQLite (aiosqlite) by default, PostgreSQL (asyncpg) when ``DATABASE_URL`` says so. With
``DATABASE_SCHEMA`` set on PostgreSQL the tables live in that schema (created if missing),
so the service can share a database with others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from nexus_kit import CheckResult
from nexus_kit.database import engine_options

from .models import Base


class Database:
    def __init__(self, url: str, schema: str | None = None) -> None:
        self.url = url
        self.schema = None if url.startswith("sqlite") else schema
        self.engine: AsyncEngine = create_async_engine(url, **engine_options(url, self.schema))
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        if url.startswith("sqlite"):
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    def session(self) -> AsyncSession:
        return self.sessions()

    async def create_schema(self) -> None:
        async with self.engine.begin() as conn:
            if self.schema:
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
            await conn.run_sync(Base.metadata.create_all)
            await conn.run_sync(_add_new_columns)

    async def ping(self) -> CheckResult:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return CheckResult(True, self.engine.dialect.name)

    async def close(self) -> None:
        await self.engine.dispose()


# Nullable columns added after the first release: create_all does not alter an existing table,
# so a database made by an older version gains them here (no data to move).
NEW_COLUMNS = {"api_keys": ("rate_limit_tpm", "token_budget_daily", "token_budget_monthly")}


def _add_new_columns(conn: Connection) -> None:
    inspector = inspect(conn)
    for table, columns in NEW_COLUMNS.items():
        present = {c["name"] for c in inspector.get_columns(table)}
        for column in columns:
            if column not in present:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} BIGINT"))


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for in-memory or other databases)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)



def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
