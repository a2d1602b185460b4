"""Secrets: password hashing, API keys and refresh tokens, signed JWT access tokens.

- Passwords are chosen by people (low entropy), so they get argon2id: slow and memory-hard on
  purpose, run in a worker thread so the event loop keeps serving.
- API keys and refresh tokens are 256-bit random strings we mint, so they get a *fast* keyed
  hash (HMAC-SHA256 with ``API_KEY_PEPPER``). Brute-forcing 2**256 candidates is hopeless
  whatever the hash's speed, so a slow hash would protect nothing and only cost ~50 ms of CPU
  on every gateway introspection. A deterministic digest also lets us find a key by an
  indexed equality lookup instead of verifying against every row; and keying it means a
  database dump alone cannot even confirm a guessed key.
- Access tokens are JWTs signed with an asymmetric key (keys.py). Verification pins the
  algorithm to the one of the key named by ``kid``: ``alg: none`` and HS256-with-the-public-
  key confusion fail because neither is ever in the allowed list.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .keys import KeyRing

API_KEY_PREFIX = "nx-"
REFRESH_TOKEN_PREFIX = "nxr-"
API_KEY_RE = re.compile(r"^nx-[A-Za-z0-9_-]{20,200}$")
JWT_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
# Shapes of what we store; anything else cannot exist, so it never reaches the database
# (PostgreSQL rejects NUL bytes in text with an error, not a miss).
ID_RE = re.compile(r"^[a-z]{2,3}_[0-9a-f]{24}$")
USERNAME_RE = re.compile(r"^[a-z0-9._@-]{1,64}$")
ROLES = ("admin", "user")


class Passwords:
    """argon2id hashing with configurable cost (lowered only in tests)."""

    def __init__(self, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        # Verified against when the user does not exist, so both paths cost the same.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        ok = await asyncio.to_thread(self._verify, stored or self._dummy, password)
        return ok and stored is not None

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False


class SecretDigester:
    """Keyed digests of the high-entropy secrets we mint (see the module docstring)."""

    def __init__(self, pepper: str) -> None:
        self._pepper = pepper.encode()

    def digest(self, secret: str) -> str:
        return hmac.new(self._pepper, secret.encode(), hashlib.sha256).hexdigest()


def new_id(kind: str) -> str:
    """Public identifiers: ``usr_…``, ``key_…``, ``rt_…``, ``fam_…``."""
    return f"{kind}_{secrets.token_hex(12)}"


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def new_refresh_token() -> str:
    return REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)


def display_prefix(api_key: str) -> str:
    """What listings show of a key: enough to recognise it, far too little to use it."""
    return api_key[: len(API_KEY_PREFIX) + 6]


def now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class AccessClaims:
    subject: str
    username: str
    role: str
    expires_at: int


class InvalidToken(Exception):
    """An access token that is malformed, forged, expired or not ours (message is safe)."""


class TokenSigner:
    def __init__(self, keyring: KeyRing, issuer: str, audience: str, ttl_s: int) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s

    def issue(self, subject: str, username: str, role: str) -> str:
        key = self.keyring.signing
        assert key.private_key is not None  # load_keyring guarantees it
        issued = now()
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": issued,
            "exp": issued + self.ttl_s,
            "jti": uuid.uuid4().hex,
            "username": username,
            "role": role,
        }
        headers = {"kid": key.kid, "typ": "JWT"}
        return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers=headers)

    def verify(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
            key = self.keyring.get(str(header.get("kid", "")))
            if key is None:
                raise InvalidToken("Access token signed by an unknown key.")
            claims = jwt.decode(
                token,
                key.public_key,
                algorithms=[key.algorithm],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("Access token expired.") from None
        except jwt.PyJWTError:
            raise InvalidToken("Invalid access token.") from None
        return _claims(claims)


def _claims(claims: dict[str, Any]) -> AccessClaims:
    sub, username, role = claims.get("sub"), claims.get("username"), claims.get("role")
    if not (isinstance(sub, str) and isinstance(username, str) and role in ROLES):
        raise InvalidToken("Invalid access token.")
    return AccessClaims(sub, username, str(role), int(claims["exp"]))
