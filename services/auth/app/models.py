"""Tables: users, their API keys, and refresh tokens grouped in rotation families.

Times are integer Unix seconds (what the API returns, and portable across SQLite and
PostgreSQL without time-zone surprises). No secret is stored in the clear: passwords as
argon2 hashes, API keys and refresh tokens as keyed SHA-256 digests (see security.py).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    # None for the bootstrap admin: it authenticates with its API key only.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(BigInteger)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    rate_limit_rpm: Mapped[int | None] = mapped_column(Integer)
    # Token quotas, enforced at the gateway (its tokenlimit.py); None = not limited.
    rate_limit_tpm: Mapped[int | None] = mapped_column(BigInteger)
    token_budget_daily: Mapped[int | None] = mapped_column(BigInteger)
    token_budget_monthly: Mapped[int | None] = mapped_column(BigInteger)
    # The key made from NEXUS_ADMIN_API_KEY; replaced when that variable changes.
    bootstrap: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # Every token rotated from one login shares a family; reuse of a spent one revokes it.
    family_id: Mapped[str] = mapped_column(String(40), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    used_at: Mapped[int | None] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)
