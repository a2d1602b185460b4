"""The service's runtime state, opened in the lifespan and held at ``app.state.usage``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from nexus_kit import CheckResult

from .db import Database, sqlite_file
from .settings import UsageSettings


@dataclass(frozen=True)
class UsageState:
    settings: UsageSettings
    db: Database


class Runtime:
    """Owns the state between startup and shutdown; creating it does no I/O."""

    def __init__(self, settings: UsageSettings) -> None:
        self.settings = settings
        self.state: UsageState | None = None

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        s = self.settings
        db_file = sqlite_file(s.database_url)
        if db_file is not None:
            await asyncio.to_thread(db_file.parent.mkdir, parents=True, exist_ok=True)
        db = Database(s.database_url, s.database_schema)
        try:
            await db.migrate()
            self.state = app.state.usage = UsageState(s, db)
            yield
        finally:
            self.state = None
            await db.close()

    async def check_database(self) -> CheckResult:
        if self.state is None:
            return CheckResult(False, "not started")
        return await self.state.db.ping()
