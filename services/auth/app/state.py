"""The service's runtime state, opened in the lifespan and held at ``app.state.auth``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from nexus_kit import CheckResult

from .bootstrap import ensure_admin_key
from .db import Database, sqlite_file
from .keys import load_keyring
from .security import Passwords, SecretDigester, TokenSigner
from .settings import AuthSettings


@dataclass(frozen=True)
class AuthState:
    settings: AuthSettings
    db: Database
    passwords: Passwords
    digester: SecretDigester
    signer: TokenSigner


class Runtime:
    """Owns the state between startup and shutdown; creating it does no I/O."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.state: AuthState | None = None

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        state = await open_state(self.settings)
        try:
            await ensure_admin_key(state.db, state.digester, self.settings)
            self.state = app.state.auth = state
            yield
        finally:
            self.state = None
            await state.db.close()

    async def check_database(self) -> CheckResult:
        if self.state is None:
            return CheckResult(False, "not started")
        return await self.state.db.ping()


async def open_state(settings: AuthSettings) -> AuthState:
    s = settings
    keyring = await asyncio.to_thread(
        load_keyring, s.jwt_signing_key_file, s.verify_key_paths, s.jwt_key_algorithm
    )
    passwords = await asyncio.to_thread(
        Passwords,
        s.password_hash_time_cost,
        s.password_hash_memory_kib,
        s.password_hash_parallelism,
    )
    db_file = sqlite_file(s.database_url)
    if db_file is not None:
        await asyncio.to_thread(db_file.parent.mkdir, parents=True, exist_ok=True)
    db = Database(s.database_url, s.database_schema)
    try:
        await db.create_schema()
    except BaseException:
        await db.close()
        raise
    signer = TokenSigner(keyring, s.jwt_issuer, s.jwt_audience, s.jwt_access_ttl_s)
    digester = SecretDigester(s.api_key_pepper.get_secret_value())
    return AuthState(s, db, passwords, digester, signer)
