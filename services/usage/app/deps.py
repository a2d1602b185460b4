"""Who is calling, as the gateway says: ``X-Nexus-Subject`` / ``X-Nexus-Role``.

The gateway authenticates every request and sets these headers (stripping any a client sent),
so behind it they are trustworthy; this service must not be reachable except through the
gateway, like every other Nexus service. The ingest endpoint instead takes the gateway's
``NEXUS_INTERNAL_TOKEN`` as a bearer, compared in constant time.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from nexus_kit import AuthenticationError, PermissionDeniedError

from .state import UsageState


@dataclass(frozen=True)
class Caller:
    subject: str
    is_admin: bool


def get_state(request: Request) -> UsageState:
    state: UsageState = request.app.state.usage
    return state


StateDep = Annotated[UsageState, Depends(get_state)]


async def caller(request: Request) -> Caller:
    subject = request.headers.get("x-nexus-subject")
    if not subject:
        raise AuthenticationError(
            "Missing caller identity: call this service through the Nexus gateway."
        )
    return Caller(subject[:64], request.headers.get("x-nexus-role") == "admin")


CallerDep = Annotated[Caller, Depends(caller)]


async def internal_caller(request: Request, state: StateDep) -> None:
    expected = state.settings.nexus_internal_token
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("Missing bearer token: ingest takes NEXUS_INTERNAL_TOKEN.")
    if expected is None:
        raise PermissionDeniedError("Ingest is off: NEXUS_INTERNAL_TOKEN is not set here.")
    if not hmac.compare_digest(token.strip().encode(), expected.get_secret_value().encode()):
        raise PermissionDeniedError("Ingest is for the gateway (NEXUS_INTERNAL_TOKEN) only.")


InternalCaller = Annotated[None, Depends(internal_caller)]
