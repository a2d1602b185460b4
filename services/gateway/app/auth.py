"""Who is calling: API keys introspected at the auth service (cached), JWTs verified locally.

API keys (``nx-...``) go to the auth service's ``POST /v1/auth/introspect`` with the gateway's
``NEXUS_INTERNAL_TOKEN``; answers are cached (positive and negative) for a few seconds so a
revoked key stops working within ``AUTH_CACHE_TTL_S`` (≤ 30 s) and the hot path makes no call
for a key seen recently. JWTs are verified against the auth service's JWKS, cached and
refetched when a token names an unknown ``kid``. When the auth service is down, cached keys
keep working until their entry expires; anything else gets 503 (not 401: the key may be fine).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from cachetools import TTLCache
from opentelemetry.trace import SpanKind

from nexus_kit import (
    AuthenticationError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    get_logger,
)
from nexus_kit.errors import quote_input
from nexus_kit.tracing import inject, span

from .credentials import credential_header, is_alias_admin
from .guard import Access, Decision, Identity
from .ratelimit import RateLimiter
from .tokenlimit import TokenLimiter, TokenQuota
from .usage import kind_of

log = get_logger("nexus.gateway.auth")
JWKS_PATH = "/.well-known/jwks.json"
INTROSPECT_PATH = "/v1/auth/introspect"


# The gateway's own admin views (DESIGN "Gateway behaviour"); user and key management of other
# users is enforced by the auth service itself, which sees the caller's bearer.
ADMIN_PATHS = frozenset({"/v1/routes", "/v1/services", "/v1/services/events"})
# Where the auth service is right now (from the routing table), or None when it has no instance.
AuthLocator = Callable[[], str | None]


def parse_bearer(header: bytes | None) -> str:
    if not header:
        raise AuthenticationError("Missing bearer token: send 'Authorization: Bearer <key>'.")
    scheme, _, token = header.decode("latin-1").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token or len(token) > 4096:
        raise AuthenticationError("Malformed Authorization header: expected 'Bearer <key>'.")
    return token


class Authenticator:
    def __init__(
        self,
        client: Callable[[], httpx.AsyncClient],
        locate_auth: AuthLocator,
        internal_token: str | None,
        *,
        cache_ttl_s: float = 10.0,
        negative_ttl_s: float = 5.0,
        jwt_issuer: str = "nexus-auth",
        jwt_audience: str = "nexus",
        timeout_s: float = 3.0,
        stale_if_error_s: float = 0.0,
        on_stale: Callable[[], None] = lambda: None,
    ) -> None:
        self.client = client
        self.locate_auth = locate_auth
        self.internal_token = internal_token
        self.timeout_s = timeout_s
        self.jwt_issuer = jwt_issuer
        self.jwt_audience = jwt_audience
        self._positive: TTLCache[str, Identity] = TTLCache(maxsize=100_000, ttl=cache_ttl_s)
        self._negative: TTLCache[str, bool] = TTLCache(maxsize=100_000, ttl=negative_ttl_s)
        # Stale-if-error: keys auth called active within this window, used only while auth is
        # unreachable (never after it said inactive). The price: a key revoked during an outage
        # keeps working until the window ends (docs: gateway README, "Auth outage").
        self._stale: TTLCache[str, Identity] | None = (
            TTLCache(maxsize=100_000, ttl=stale_if_error_s) if stale_if_error_s > 0 else None
        )
        self._on_stale = on_stale
        self._jwks: dict[str, jwt.PyJWK] = {}
        self._jwks_fetched_at = 0.0
        self._jwks_lock = asyncio.Lock()
        self._inflight: dict[str, asyncio.Future[Identity]] = {}

    async def authenticate(self, authorization: bytes | None) -> Identity:
        token = parse_bearer(authorization)
        if token.count(".") == 2 and not token.startswith("nx-"):
            return await self._verify_jwt(token)
        return await self._introspect_cached(token)

    # --- API keys -------------------------------------------------------------------------
    async def _introspect_cached(self, token: str) -> Identity:
        digest = hashlib.sha256(token.encode()).hexdigest()
        hit = self._positive.get(digest)
        if hit is not None:
            return hit
        if digest in self._negative:
            raise AuthenticationError("Invalid API key.")
        # Concurrent first requests with the same key share one introspection call.
        pending = self._inflight.get(digest)
        if pending is not None:
            shared: Identity = await asyncio.shield(pending)
            return shared
        future: asyncio.Future[Identity] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            identity = await self._introspect(token, digest)
            future.set_result(identity)
            return identity
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[digest]

    async def _introspect(self, token: str, digest: str) -> Identity:
        base = self.locate_auth()
        if base is None:
            return self._stale_or(digest, _auth_down())
        headers = {"Authorization": f"Bearer {self.internal_token}"} if self.internal_token else {}
        try:
            with span("gateway.auth.introspect", kind=SpanKind.CLIENT):  # traceparent: inject()
                resp = await self.client().post(
                    base + INTROSPECT_PATH, json={"token": token}, headers=inject(headers),
                    timeout=self.timeout_s,
                )  # fmt: skip
        except httpx.HTTPError as exc:
            log.warning("introspection failed", error=type(exc).__name__)
            return self._stale_or(digest, _auth_down())
        if resp.status_code != 200:
            log.warning("introspection refused", status=resp.status_code)
            return self._stale_or(digest, _auth_down("The auth service could not check the key."))
        body: dict[str, Any] = resp.json()
        if not body.get("active"):
            self._negative[digest] = True
            if self._stale is not None:
                self._stale.pop(digest, None)  # revoked stays revoked, outage or not
            raise AuthenticationError("Invalid API key.")
        identity = Identity(
            subject=str(body.get("subject")),
            role=str(body.get("role") or "user"),
            key_id=body.get("key_id"),
            rate_limit_rpm=body.get("rate_limit_rpm"),
            method="api_key",
            rate_limit_tpm=body.get("rate_limit_tpm"),
            token_budget_daily=body.get("token_budget_daily"),
            token_budget_monthly=body.get("token_budget_monthly"),
        )
        self._positive[digest] = identity
        if self._stale is not None:
            self._stale[digest] = identity
        return identity

    def _stale_or(self, digest: str, error: ServiceUnavailableError) -> Identity:
        """Auth is unreachable: a key it called active within the stale window still works
        (cached like a fresh answer, so the dead auth is not asked per request)."""
        identity = self._stale.get(digest) if self._stale is not None else None
        if identity is None:
            raise error
        self._positive[digest] = identity
        self._on_stale()
        log.info("auth unreachable; admitted from the stale-if-error window")
        return identity

    # --- JWTs -----------------------------------------------------------------------------
    async def _verify_jwt(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationError("Malformed bearer token.") from None
        kid = str(header.get("kid", ""))
        key = self._jwks.get(kid) or await self._refresh_jwks(kid)
        if key is None:
            raise AuthenticationError("Token signed by an unknown key.")
        try:
            claims = jwt.decode(
                token, key=key.key, algorithms=[key.algorithm_name],
                issuer=self.jwt_issuer, audience=self.jwt_audience,
                options={"require": ["exp", "sub", "iss"]},
            )  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("Token expired.") from None
        except jwt.PyJWTError:
            raise AuthenticationError("Invalid token.") from None
        return Identity(
            subject=str(claims["sub"]), role=str(claims.get("role", "user")), method="jwt"
        )

    async def _refresh_jwks(self, kid: str) -> jwt.PyJWK | None:
        async with self._jwks_lock:
            if kid in self._jwks:
                return self._jwks[kid]
            # An unknown kid refetches at most once a second (forged kids must not flood auth).
            if time.monotonic() - self._jwks_fetched_at < 1.0:
                return None
            self._jwks_fetched_at = time.monotonic()
            base = self.locate_auth()
            if base is None:
                raise _auth_down()
            try:
                resp = await self.client().get(base + JWKS_PATH, timeout=self.timeout_s)
                resp.raise_for_status()
                keyset = jwt.PyJWKSet.from_dict(resp.json())
            except (httpx.HTTPError, jwt.PyJWTError, ValueError) as exc:
                log.warning("JWKS fetch failed", error=type(exc).__name__)
                raise _auth_down() from None
            self._jwks = {k.key_id: k for k in keyset.keys if k.key_id}
            return self._jwks.get(kid)



def _auth_down(message: str = "The auth service is unavailable.") -> ServiceUnavailableError:
    # 503, not 401: the key may well be valid; the client should retry, not discard it.
    return ServiceUnavailableError(message, retry_after=5)


class AuthGuard:
    """The gateway's ``Guard``: who is calling (401/503), may they (403), how often (429)."""

    def __init__(
        self,
        authenticator: Authenticator,
        limiter: RateLimiter,
        admin_paths: frozenset[str] = ADMIN_PATHS,
        tokens: TokenLimiter | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.limiter = limiter
        self.admin_paths = admin_paths
        self.tokens = tokens

    async def __call__(self, access: Access) -> Decision:
        if access.public:
            return Decision()
        identity = await self.authenticator.authenticate(credential_header(access.headers))
        admin_only = access.path in self.admin_paths or is_alias_admin(access.path)
        if admin_only and not identity.is_admin:
            raise PermissionDeniedError(f"{quote_input(access.path)} is for administrators only.")
        tokens = TokenQuota.of(identity) if self.tokens is not None else None
        try:
            quota = await self.limiter.hit(identity.limit_key, identity.rate_limit_rpm)
        except RateLimitError as refused:
            if tokens is not None and self.tokens is not None:  # token headers on the 429 too
                peeked = await self.tokens.peek(identity.limit_key, tokens)
                refused.headers.update({k.decode(): v.decode() for k, v in peeked})
            raise
        headers = quota.headers() if quota else []
        if tokens is not None and self.tokens is not None:  # token quotas (tokenlimit.py)
            if kind_of(access.path) is not None:  # a model endpoint: admitted or refused
                headers = [*headers, *await self.tokens.admit(identity.limit_key, tokens)]
            else:  # any other path: the headers only
                headers = [*headers, *await self.tokens.peek(identity.limit_key, tokens)]
        return Decision(identity=identity, headers=headers)


def _header(access: Access, name: bytes) -> bytes | None:
    for key, value in access.headers:
        if key == name:
            return value
    return None
