"""Who is calling: ``Authorization: Bearer <api key | access token>`` → a ``Principal``.

Missing, malformed, unknown, revoked, expired or forged credentials are all a 401 in the
OpenAI envelope with code ``invalid_api_key``; the message says which, never echoing the value.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request

from nexus_kit import AuthenticationError, PermissionDeniedError

from . import store
from .security import API_KEY_RE, JWT_RE, InvalidToken
from .state import AuthState

_BEARER_RE = re.compile(r"^Bearer +([\x21-\x7e]{1,4096})$", re.IGNORECASE)
_USAGE = "send 'Authorization: Bearer <api key or access token>'"


@dataclass(frozen=True)
class Principal:
    user_id: str
    username: str
    role: str
    token_type: Literal["api_key", "access_token"]
    key_id: str | None = None
    rate_limit_rpm: int | None = None
    expires_at: int | None = None
    rate_limit_tpm: int | None = None
    token_budget_daily: int | None = None
    token_budget_monthly: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def get_state(request: Request) -> AuthState:
    state: AuthState = request.app.state.auth
    return state


StateDep = Annotated[AuthState, Depends(get_state)]


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if header is None:
        raise AuthenticationError(f"Missing credentials: {_USAGE}.")
    match = _BEARER_RE.match(header.strip())
    if match is None:
        raise AuthenticationError(f"Malformed Authorization header: {_USAGE}.")
    return match.group(1)


async def authenticate(state: AuthState, token: str) -> Principal:
    """Resolve a bearer credential; raises ``AuthenticationError`` when it is not valid."""
    if API_KEY_RE.match(token):
        return await _from_api_key(state, token)
    if JWT_RE.match(token):
        return await _from_access_token(state, token)
    raise AuthenticationError(f"Malformed bearer token: {_USAGE}.")


async def _from_api_key(state: AuthState, token: str) -> Principal:
    async with state.db.session() as session:
        found = await store.active_key(session, state.digester.digest(token))
    if found is None:
        raise AuthenticationError("Invalid API key (unknown or revoked).")
    key, user = found
    return Principal(
        user.id, user.username, user.role, "api_key", key_id=key.id,
        rate_limit_rpm=key.rate_limit_rpm, rate_limit_tpm=key.rate_limit_tpm,
        token_budget_daily=key.token_budget_daily, token_budget_monthly=key.token_budget_monthly,
    )  # fmt: skip


async def _from_access_token(state: AuthState, token: str) -> Principal:
    try:
        claims = state.signer.verify(token)
    except InvalidToken as exc:
        raise AuthenticationError(str(exc)) from None
    async with state.db.session() as session:
        user = await store.get_user(session, claims.subject)
    if user is None:
        raise AuthenticationError("Invalid access token (unknown user).")
    return Principal(
        user.id, user.username, user.role, "access_token", expires_at=claims.expires_at
    )


async def current_principal(request: Request, state: StateDep) -> Principal:
    return await authenticate(state, bearer_token(request))


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def admin_principal(principal: CurrentPrincipal) -> Principal:
    if not principal.is_admin:
        raise PermissionDeniedError("This endpoint is for admins only.")
    return principal


AdminPrincipal = Annotated[Principal, Depends(admin_principal)]


async def introspection_caller(request: Request, state: StateDep) -> str:
    """The gateway (by ``NEXUS_INTERNAL_TOKEN``) or an admin; returns who, for the log."""
    token = bearer_token(request)
    internal = state.settings.nexus_internal_token
    if internal is not None and hmac.compare_digest(
        token.encode(), internal.get_secret_value().encode()
    ):
        return "internal"
    principal = await authenticate(state, token)
    if not principal.is_admin:
        raise PermissionDeniedError(
            "Token introspection is for the gateway (NEXUS_INTERNAL_TOKEN) and admins only."
        )
    return principal.user_id


IntrospectionCaller = Annotated[str, Depends(introspection_caller)]
