"""The gateway's auth pieces in isolation: bearer parsing, introspection cache, JWTs, limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from app.auth import Authenticator, AuthGuard, parse_bearer
from app.guard import Access
from app.ratelimit import RateLimiter
from nexus_kit import (
    AuthenticationError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
)

AUTH = "http://auth.test"
INTROSPECT = f"{AUTH}/v1/auth/introspect"
JWKS = f"{AUTH}/.well-known/jwks.json"
KEY = b"Bearer nx-" + b"a" * 40
ACTIVE = {"active": True, "subject": "usr_1", "role": "user", "key_id": "key_1",
          "rate_limit_rpm": 3}  # fmt: skip


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def authenticator(http: httpx.AsyncClient, where: str | None = AUTH, **kw: Any) -> Authenticator:
    return Authenticator(lambda: http, lambda: where, "internal-token-123456", **kw)


@pytest.mark.parametrize(
    "header",
    [None, b"", b"Basic abc", b"Bearer", b"Bearer   ", b"Bearer a b", b"bearer" + b"x" * 5000],
)
def test_malformed_bearer_headers_are_401(header: bytes | None) -> None:
    with pytest.raises(AuthenticationError) as info:
        parse_bearer(header)
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"


@respx.mock
async def test_active_key_is_introspected_once_then_cached(http: httpx.AsyncClient) -> None:
    route = respx.post(INTROSPECT).respond(json=ACTIVE)
    auth = authenticator(http)
    first = await auth.authenticate(KEY)
    second = await auth.authenticate(KEY)
    assert first == second
    assert (first.subject, first.role, first.key_id, first.rate_limit_rpm) == (
        "usr_1", "user", "key_1", 3
    )
    assert route.call_count == 1
    sent = route.calls.last.request
    assert sent.headers["authorization"] == "Bearer internal-token-123456"
    assert b'"token":"nx-' in sent.content.replace(b" ", b"")


@respx.mock
async def test_inactive_key_is_401_and_remembered(http: httpx.AsyncClient) -> None:
    route = respx.post(INTROSPECT).respond(json={"active": False})
    auth = authenticator(http)
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            await auth.authenticate(KEY)
    assert route.call_count == 1


@respx.mock
async def test_cache_expiry_picks_up_revocation(http: httpx.AsyncClient) -> None:
    route = respx.post(INTROSPECT)
    route.side_effect = [
        httpx.Response(200, json=ACTIVE), httpx.Response(200, json={"active": False})
    ]
    auth = authenticator(http, cache_ttl_s=0.2)
    await auth.authenticate(KEY)
    await asyncio.sleep(0.3)
    with pytest.raises(AuthenticationError):
        await auth.authenticate(KEY)


@respx.mock
async def test_auth_down_cached_keys_work_others_get_503(http: httpx.AsyncClient) -> None:
    route = respx.post(INTROSPECT).respond(json=ACTIVE)
    auth = authenticator(http)
    await auth.authenticate(KEY)
    route.side_effect = httpx.ConnectError("refused")
    assert (await auth.authenticate(KEY)).subject == "usr_1"  # still cached
    with pytest.raises(ServiceUnavailableError) as info:
        await auth.authenticate(b"Bearer nx-" + b"b" * 40)
    assert info.value.status_code == 503
    assert info.value.headers["Retry-After"]


@respx.mock
async def test_auth_refusing_the_gateway_is_503_not_401(http: httpx.AsyncClient) -> None:
    respx.post(INTROSPECT).respond(403, json={"error": {"message": "no"}})
    with pytest.raises(ServiceUnavailableError):
        await authenticator(http).authenticate(KEY)


async def test_no_auth_instance_is_503(http: httpx.AsyncClient) -> None:
    with pytest.raises(ServiceUnavailableError):
        await authenticator(http, where=None).authenticate(KEY)


@respx.mock
async def test_concurrent_first_requests_share_one_introspection(http: httpx.AsyncClient) -> None:
    async def slow(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return httpx.Response(200, json=ACTIVE)

    route = respx.post(INTROSPECT).mock(side_effect=slow)
    auth = authenticator(http)
    results = await asyncio.gather(*(auth.authenticate(KEY) for _ in range(10)))
    assert {r.subject for r in results} == {"usr_1"}
    assert route.call_count == 1


# --- JWTs ---------------------------------------------------------------------------------


class Signer:
    def __init__(self, kid: str = "kid-1") -> None:
        self.kid = kid
        self.private = Ed25519PrivateKey.generate()

    def jwks(self) -> dict[str, Any]:
        jwk = OKPAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "alg": "EdDSA", "use": "sig"}]}

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": "nexus-auth", "aud": "nexus", "sub": "usr_9", "role": "admin",
                "iat": now, "exp": now + 60, **claims}  # fmt: skip
        return jwt.encode(body, self.private, algorithm="EdDSA", headers={"kid": self.kid})


def bearer(token: str) -> bytes:
    return f"Bearer {token}".encode()


@respx.mock
async def test_valid_jwt_is_verified_locally(http: httpx.AsyncClient) -> None:
    signer = Signer()
    keys = respx.get(JWKS).respond(json=signer.jwks())
    introspect = respx.post(INTROSPECT).respond(json=ACTIVE)
    auth = authenticator(http)
    for _ in range(3):
        who = await auth.authenticate(bearer(signer.token()))
        assert (who.subject, who.role, who.method) == ("usr_9", "admin", "jwt")
    assert keys.call_count == 1
    assert introspect.call_count == 0


@respx.mock
@pytest.mark.parametrize(
    "make",
    [
        lambda s: s.token(exp=int(time.time()) - 10),  # expired
        lambda s: s.token(aud="someone-else"),
        lambda s: s.token(iss="evil"),
        lambda s: Signer(kid=s.kid).token(),  # forged: right kid, other key
        lambda s: jwt.encode({"sub": "x", "role": "admin", "iss": "nexus-auth", "aud": "nexus",
                              "exp": int(time.time()) + 60}, key="", algorithm="none",
                             headers={"kid": s.kid}),
        lambda s: jwt.encode({"sub": "x", "iss": "nexus-auth", "aud": "nexus",
                              "exp": int(time.time()) + 60}, "secret-bytes-that-are-long-enough-32",
                             algorithm="HS256", headers={"kid": s.kid}),
        lambda s: "not.a.jwt",
    ],
    ids=["expired", "audience", "issuer", "forged", "alg-none", "hs256", "garbage"],
)
async def test_bad_jwts_are_401(http: httpx.AsyncClient, make: Any) -> None:
    signer = Signer()
    respx.get(JWKS).respond(json=signer.jwks())
    with pytest.raises(AuthenticationError):
        await authenticator(http).authenticate(bearer(make(signer)))


@respx.mock
async def test_unknown_kid_refetches_jwks_once(http: httpx.AsyncClient) -> None:
    old, new = Signer("old"), Signer("new")
    keys = respx.get(JWKS)
    keys.side_effect = [httpx.Response(200, json=old.jwks()), httpx.Response(200, json=new.jwks())]
    auth = authenticator(http)
    await auth.authenticate(bearer(old.token()))
    await asyncio.sleep(1.05)  # refetches are spaced by a second
    assert (await auth.authenticate(bearer(new.token()))).subject == "usr_9"  # rotated key
    assert keys.call_count == 2
    with pytest.raises(AuthenticationError):  # a made-up kid right after: no third fetch
        await auth.authenticate(bearer(Signer("made-up").token()))
    assert keys.call_count == 2


# --- rate limits and the guard ------------------------------------------------------------


async def test_limit_counts_and_refuses_with_retry_after() -> None:
    limiter = RateLimiter(None, default_rpm=100)
    quotas = [await limiter.hit("k1", 3) for _ in range(3)]
    assert [q.remaining for q in quotas if q] == [2, 1, 0]
    headers = dict(quotas[0].headers()) if quotas[0] else {}
    assert headers[b"x-ratelimit-limit-requests"] == b"3"
    assert headers[b"x-ratelimit-reset-requests"].endswith(b"s")
    with pytest.raises(RateLimitError) as info:
        await limiter.hit("k1", 3)
    assert info.value.status_code == 429
    assert info.value.code == "rate_limit_exceeded"
    assert 1 <= int(info.value.headers["Retry-After"]) <= 60
    assert info.value.headers["x-ratelimit-remaining-requests"] == "0"
    assert await limiter.hit("k2", 3) is not None  # other keys are counted apart


async def test_default_and_unlimited() -> None:
    limiter = RateLimiter(None, default_rpm=2)
    await limiter.hit("d", None)
    await limiter.hit("d", None)
    with pytest.raises(RateLimitError):
        await limiter.hit("d", None)
    assert await RateLimiter(None, default_rpm=0).hit("u", None) is None


@pytest.mark.integration
async def test_redis_storage_is_shared_between_limiters() -> None:
    key = f"shared-{time.time_ns()}"
    first = RateLimiter("redis://127.0.0.1:6379/0", default_rpm=0)
    second = RateLimiter("redis://127.0.0.1:6379/0", default_rpm=0)
    assert await first.check()
    await first.hit(key, 3)
    await second.hit(key, 3)
    await first.hit(key, 3)
    try:
        with pytest.raises(RateLimitError):
            await second.hit(key, 3)
    finally:
        await first.close()
        await second.close()


async def test_unreachable_redis_fails_open() -> None:
    limiter = RateLimiter("redis://127.0.0.1:1/0", default_rpm=1)  # nothing listens on port 1
    try:
        assert await limiter.hit("k", 1) is None
        assert await limiter.hit("k", 1) is None  # not refused: limits are off while it is down
    finally:
        await limiter.close()


@respx.mock
async def test_guard_public_admin_and_limits(http: httpx.AsyncClient) -> None:
    respx.post(INTROSPECT).respond(json=ACTIVE)
    guard = AuthGuard(authenticator(http), RateLimiter(None, default_rpm=100))
    open_call = await guard(Access("POST", "/v1/auth/token", True, []))
    assert open_call.identity is None
    with pytest.raises(AuthenticationError):
        await guard(Access("GET", "/v1/models", False, []))
    with pytest.raises(PermissionDeniedError):
        await guard(Access("GET", "/v1/routes", False, [(b"authorization", KEY)]))
    allowed = await guard(Access("GET", "/v1/models", False, [(b"authorization", KEY)]))
    assert allowed.identity is not None
    assert allowed.identity.subject == "usr_1"
    assert dict(allowed.headers)[b"x-ratelimit-limit-requests"] == b"3"
