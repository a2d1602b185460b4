"""Login and refresh-token rotation.

Each login starts a *family*. Refreshing spends the presented token and issues its successor
in the same family. Presenting a token that was already spent means it leaked (the thief or
the owner is replaying it), so the whole family is revoked: both parties must log in again.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from nexus_kit import AuthenticationError, get_logger

from . import store
from .models import User
from .schemas import TokenResponse
from .security import USERNAME_RE, new_id, new_refresh_token, now
from .state import AuthState

log = get_logger("nexus.auth.sessions")


def _bad_credentials() -> AuthenticationError:
    # Same answer for unknown users and wrong passwords: no username probing.
    return AuthenticationError("Incorrect username or password.", code="invalid_credentials")


def _bad_refresh(message: str = "Invalid or expired refresh token.") -> AuthenticationError:
    return AuthenticationError(message, code="invalid_refresh_token", param="refresh_token")


async def login(state: AuthState, username: str, password: str) -> TokenResponse:
    # The lookup's connection goes back to the pool before the (slow) argon2 check.
    name = username.lower()
    user = None
    if USERNAME_RE.match(name):  # other names cannot exist: no need to ask the database
        async with state.db.session() as session:
            user = await store.user_by_name(session, name)
    stored = user.password_hash if user is not None else None
    if user is None or not await state.passwords.verify(stored, password):
        raise _bad_credentials()
    async with state.db.session() as session:
        if stored is not None and state.passwords.needs_rehash(stored):
            new_hash = await state.passwords.hash(password)
            await store.set_password_hash(session, user.id, new_hash)
        log.info("login", user_id=user.id)
        return await _issue(state, session, user, family_id=new_id("fam"))


async def refresh(state: AuthState, refresh_token: str) -> TokenResponse:
    async with state.db.session() as session:
        token = await store.refresh_by_hash(session, state.digester.digest(refresh_token))
        if token is None or token.revoked_at is not None or token.expires_at <= now():
            raise _bad_refresh()
        if not await store.spend_refresh_token(session, token.id):
            await store.revoke_family(session, token.family_id)
            log.warning("refresh token reuse; family revoked", family_id=token.family_id)
            raise _bad_refresh("Refresh token already used; this session has been revoked.")
        user = await store.get_user(session, token.user_id)
        if user is None:
            raise _bad_refresh()
        return await _issue(state, session, user, family_id=token.family_id)


async def _issue(
    state: AuthState, session: AsyncSession, user: User, family_id: str
) -> TokenResponse:
    secret = new_refresh_token()
    ttl = state.settings.jwt_refresh_ttl_s
    await store.add_refresh_token(
        session,
        user_id=user.id,
        family_id=family_id,
        token_hash=state.digester.digest(secret),
        ttl_s=ttl,
    )
    return TokenResponse(
        access_token=state.signer.issue(user.id, user.username, user.role),
        refresh_token=secret,
        expires_in=state.signer.ttl_s,
        refresh_expires_in=ttl,
    )
