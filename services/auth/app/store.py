"""Queries. Every value reaches SQL as a bound parameter (SQLAlchemy Core/ORM), never as text."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nexus_kit import ConflictError

from .models import ApiKey, RefreshToken, User
from .security import new_id, now


async def add_user(
    session: AsyncSession, username: str, password_hash: str | None, role: str
) -> User:
    user = User(
        id=new_id("usr"),
        username=username,
        password_hash=password_hash,
        role=role,
        created_at=now(),
    )
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise ConflictError(
            f"A user named '{username}' already exists.", param="username"
        ) from None
    return user


async def get_user(session: AsyncSession, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def user_by_name(session: AsyncSession, username: str) -> User | None:
    found = await session.scalars(select(User).where(User.username == username))
    return found.first()


async def set_password_hash(session: AsyncSession, user_id: str, password_hash: str) -> None:
    await session.execute(
        update(User).where(User.id == user_id).values(password_hash=password_hash)
    )
    await session.commit()


async def list_users(session: AsyncSession) -> Sequence[User]:
    return (await session.scalars(select(User).order_by(User.created_at, User.id))).all()


async def add_api_key(
    session: AsyncSession,
    *,
    user_id: str,
    name: str,
    key_hash: str,
    prefix: str,
    rate_limit_rpm: int | None,
    bootstrap: bool = False,
    limits: dict[str, int | None] | None = None,
) -> ApiKey:
    key = ApiKey(
        id=new_id("key"),
        user_id=user_id,
        name=name,
        key_hash=key_hash,
        prefix=prefix,
        rate_limit_rpm=rate_limit_rpm,
        bootstrap=bootstrap,
        created_at=now(),
        **(limits or {}),
    )
    session.add(key)
    await session.commit()
    return key


async def key_by_hash(session: AsyncSession, key_hash: str) -> ApiKey | None:
    found = await session.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash))
    return found.first()


async def active_key(session: AsyncSession, key_hash: str) -> tuple[ApiKey, User] | None:
    query = (
        select(ApiKey, User)
        .join(User, User.id == ApiKey.user_id)
        .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )
    row = (await session.execute(query)).first()
    return None if row is None else (row[0], row[1])


async def list_keys(session: AsyncSession, user_id: str | None) -> Sequence[ApiKey]:
    """Active keys of one user, or of everyone when ``user_id`` is None."""
    query = select(ApiKey).where(ApiKey.revoked_at.is_(None))
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    return (await session.scalars(query.order_by(ApiKey.created_at, ApiKey.id))).all()


async def update_key_limits(
    session: AsyncSession, key_id: str, limits: dict[str, int | None]
) -> ApiKey | None:
    """Set the given limit fields (None clears one) of an active key; None when there is none."""
    key = (
        await session.scalars(
            select(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        )
    ).first()
    if key is None:
        return None
    for name, value in limits.items():
        setattr(key, name, value)
    await session.commit()
    return key


async def revoke_key(session: AsyncSession, key_id: str, owner_id: str | None) -> bool:
    """Revoke an active key (of ``owner_id`` unless None); False when there is none such."""
    query = update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
    if owner_id is not None:
        query = query.where(ApiKey.user_id == owner_id)
    result = await session.execute(query.values(revoked_at=now()))
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def add_refresh_token(
    session: AsyncSession, *, user_id: str, family_id: str, token_hash: str, ttl_s: int
) -> RefreshToken:
    issued = now()
    token = RefreshToken(
        id=new_id("rt"),
        family_id=family_id,
        user_id=user_id,
        token_hash=token_hash,
        created_at=issued,
        expires_at=issued + ttl_s,
    )
    session.add(token)
    await session.commit()
    return token


async def refresh_by_hash(session: AsyncSession, token_hash: str) -> RefreshToken | None:
    found = await session.scalars(select(RefreshToken).where(RefreshToken.token_hash == token_hash))
    return found.first()


async def spend_refresh_token(session: AsyncSession, token_id: str) -> bool:
    """Mark a token used, atomically: of two concurrent refreshes only one wins."""
    result = await session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.id == token_id,
            RefreshToken.used_at.is_(None),
            RefreshToken.revoked_at.is_(None),
        )
        .values(used_at=now())
    )
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def revoke_family(session: AsyncSession, family_id: str) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now())
    )
    await session.commit()


async def revoke_bootstrap_keys(session: AsyncSession, keep_hash: str | None) -> None:
    """Revoke keys made from an earlier NEXUS_ADMIN_API_KEY (all of them when it is unset)."""
    query = update(ApiKey).where(ApiKey.bootstrap.is_(True), ApiKey.revoked_at.is_(None))
    if keep_hash is not None:
        query = query.where(ApiKey.key_hash != keep_hash)
    await session.execute(query.values(revoked_at=now()))
    await session.commit()
