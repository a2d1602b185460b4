"""``NEXUS_ADMIN_API_KEY``: an admin user and an API key with exactly that value, at startup.

Idempotent across restarts (the key is found by its digest), safe when replicas start together
(a lost insert race is retried), and the key follows the variable: when it changes or is
unset, keys made from earlier values are revoked.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nexus_kit import ConflictError, get_logger

from . import store
from .db import Database
from .models import User
from .security import SecretDigester, display_prefix
from .settings import AuthSettings

log = get_logger("nexus.auth.bootstrap")
_ATTEMPTS = 3


async def ensure_admin_key(db: Database, digester: SecretDigester, settings: AuthSettings) -> None:
    secret = settings.nexus_admin_api_key
    for attempt in range(_ATTEMPTS):
        async with db.session() as session:
            try:
                if secret is None:
                    await store.revoke_bootstrap_keys(session, keep_hash=None)
                    return
                await _ensure(
                    session, digester, settings.nexus_admin_username, secret.get_secret_value()
                )
                return
            except (IntegrityError, ConflictError):
                await session.rollback()
                if attempt == _ATTEMPTS - 1:
                    raise


async def _ensure(session: AsyncSession, digester: SecretDigester, username: str, key: str) -> None:
    digest = digester.digest(key)
    admin = await _admin_user(session, username)
    existing = await store.key_by_hash(session, digest)
    if existing is None:
        created = await store.add_api_key(
            session,
            user_id=admin.id,
            name="bootstrap admin key (NEXUS_ADMIN_API_KEY)",
            key_hash=digest,
            prefix=display_prefix(key),
            rate_limit_rpm=None,
            bootstrap=True,
        )
        log.info("bootstrap admin key created", key_id=created.id, username=username)
    elif existing.revoked_at is not None or existing.user_id != admin.id or not existing.bootstrap:
        existing.revoked_at, existing.user_id, existing.bootstrap = None, admin.id, True
        await session.commit()
        log.info("bootstrap admin key restored", key_id=existing.id, username=username)
    await store.revoke_bootstrap_keys(session, keep_hash=digest)


async def _admin_user(session: AsyncSession, username: str) -> User:
    user = await store.user_by_name(session, username)
    if user is None:
        return await store.add_user(session, username, password_hash=None, role="admin")
    if user.role != "admin":
        user.role = "admin"
        await session.commit()
    return user
