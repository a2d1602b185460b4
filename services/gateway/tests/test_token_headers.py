"""``x-ratelimit-*-tokens`` on every response of a key with a TPM limit, not only on model
endpoints: other paths (``/v1/models``, the usage API, a request-limit 429) read the window
without being refused by it. Keys without a TPM limit and JWT callers (no key: token quotas are
key fields) get none."""

from __future__ import annotations

import secrets
from typing import Any, cast

import pytest

from app.auth import Authenticator, AuthGuard
from app.guard import Access, Identity
from app.ratelimit import RateLimiter
from app.tokenlimit import TokenLimiter, TokenQuota, TokenRateLimitError
from nexus_kit import RateLimitError

BEARER = [(b"authorization", b"Bearer nx-test")]


class OneCaller:
    """Stands in for the introspecting authenticator: always the same identity."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    async def authenticate(self, header: Any) -> Identity:
        return self.identity


def guard(identity: Identity, rpm: int = 100) -> tuple[AuthGuard, TokenLimiter]:
    limiter = RateLimiter(None, default_rpm=rpm)
    tokens = TokenLimiter(limiter.storage)
    authn = cast(Authenticator, OneCaller(identity))
    return AuthGuard(authn, limiter, tokens=tokens), tokens


def key(**fields: Any) -> Identity:
    return Identity(subject="usr_1", role="user", key_id=f"key_f13_{secrets.token_hex(4)}",
                    **fields)  # fmt: skip


async def headers_of(g: AuthGuard, method: str, path: str) -> dict[bytes, bytes]:
    return dict((await g(Access(method, path, False, BEARER))).headers)


async def test_every_path_of_a_tpm_key_carries_the_token_headers() -> None:
    who = key(rate_limit_tpm=100)
    g, tokens = guard(who)
    for method, path in [
        ("GET", "/v1/models"),
        ("GET", "/v1/organization/usage/completions"),
        ("GET", "/v1/usage/keys/key_1"),
        ("POST", "/v1/chat/completions"),
    ]:
        got = await headers_of(g, method, path)
        assert got[b"x-ratelimit-limit-tokens"] == b"100", path
        assert got[b"x-ratelimit-remaining-tokens"] == b"100", path
        assert got[b"x-ratelimit-reset-tokens"] == b"0ms", path  # a window not started
        assert got[b"x-ratelimit-limit-requests"] == b"100", path
    quota = TokenQuota.of(who)
    assert quota is not None
    await tokens.charge(who.limit_key, quota, 130)  # past the limit
    with pytest.raises(TokenRateLimitError):  # a model endpoint is refused...
        await g(Access("POST", "/v1/chat/completions", False, BEARER))
    got = await headers_of(g, "GET", "/v1/models")  # ...the rest is not, and says why
    assert got[b"x-ratelimit-remaining-tokens"] == b"0"
    assert got[b"x-ratelimit-reset-tokens"] != b"0ms"


async def test_a_request_limit_429_carries_the_token_headers_too() -> None:
    g, _ = guard(key(rate_limit_tpm=50), rpm=1)
    await g(Access("GET", "/v1/models", False, BEARER))
    with pytest.raises(RateLimitError) as refused:
        await g(Access("GET", "/v1/models", False, BEARER))
    assert refused.value.headers["x-ratelimit-limit-tokens"] == "50"
    assert refused.value.headers["x-ratelimit-remaining-tokens"] == "50"
    assert refused.value.headers["x-ratelimit-limit-requests"] == "1"


@pytest.mark.parametrize(
    "who",
    [
        key(),  # no token limit at all
        key(token_budget_daily=10),  # a budget only: budgets have no headers
        Identity(subject="usr_1", role="user", method="jwt"),  # no key: no quota applies
    ],
)
async def test_no_tpm_limit_no_token_headers(who: Identity) -> None:
    g, _ = guard(who)
    for path in ("/v1/models", "/v1/chat/completions"):
        got = await headers_of(g, "POST" if "chat" in path else "GET", path)
        assert b"x-ratelimit-limit-tokens" not in got
        assert got[b"x-ratelimit-limit-requests"] == b"100"
