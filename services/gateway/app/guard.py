"""The seam where authentication and rate limiting plug in (``auth.AuthGuard`` fills it).

A ``Guard`` is called once per HTTP request, after the kit has assigned the request id (so
its refusals are logged and carry ``X-Request-ID``) and before routing, the gateway's own
routes and the proxy alike. It learns whether the request targets an open endpoint: the
gateway's ``/health``, ``/readyz``, ``/v1/metadata``, or an endpoint a service marks
``"public": true`` (read from the current routing table). It refuses by raising a
``NexusError`` (``AuthenticationError`` 401, ``RateLimitError`` 429...), rendered in the
OpenAI envelope, or allows it with a ``Decision``: the caller's ``Identity`` (forwarded
upstream as ``X-Nexus-Subject`` / ``X-Nexus-Role``; the same headers sent by a client are always
stripped, so nobody can claim an identity) and headers to add to the response
(``x-ratelimit-*``).

CORS preflight never reaches it: ``CORSMiddleware`` sits outside and answers ``OPTIONS``.
Install one with ``build_app(settings, guard=...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nexus_kit import NexusError

from .dialects import is_anthropic
from .docs_routes import PUBLIC_PATHS as DOCS_PATHS
from .exchange import Exchange, as_list

# The gateway's own endpoints that never need a bearer (DESIGN "Auth").
# DOCS_PATHS: /openapi.json, /docs and Swagger UI's assets (docs_routes.py).
OPEN_PATHS = frozenset({"/health", "/readyz", "/v1/metadata"}) | DOCS_PATHS


IDENTITY_HEADERS = (b"x-nexus-subject", b"x-nexus-role")


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    role: str
    key_id: str | None = None
    rate_limit_rpm: int | None = None
    method: str = "api_key"  # api_key | jwt
    # Token quotas of the key (tokenlimit.py); None = not limited.
    rate_limit_tpm: int | None = None
    token_budget_daily: int | None = None
    token_budget_monthly: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def limit_key(self) -> str:
        """What a rate limit counts against: the API key, else the token's subject."""
        return self.key_id or f"sub:{self.subject}"


@dataclass(frozen=True, slots=True)
class Decision:
    identity: Identity | None = None
    headers: Sequence[tuple[bytes, bytes]] = ()


@dataclass(frozen=True, slots=True)
class Access:
    """What a guard knows about a request before deciding."""

    method: str
    path: str
    public: bool  # an open gateway path or a service endpoint marked public
    headers: Sequence[tuple[bytes, bytes]]


class Guard(Protocol):
    async def __call__(self, access: Access) -> Decision:
        """Allow (with the caller's identity and response headers to add) or raise."""
        ...


class GuardMiddleware:
    """Pure ASGI, so streamed responses and the request-id contextvar pass through intact."""

    def __init__(self, app: ASGIApp, guard: Guard, is_public: Callable[[str, str], bool]) -> None:
        self.app = app
        self.guard = guard
        self.is_public = is_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        # Edited in place, not copied: one list for the server, this frame and the proxy,
        # which empties it once a stream's start went out (exchange.RequestHead.release_raw).
        headers = scope["headers"] = as_list(scope["headers"])
        if any(name in IDENTITY_HEADERS for name, _ in headers):
            headers[:] = [(n, v) for n, v in headers if n not in IDENTITY_HEADERS]
        public = path in OPEN_PATHS or self.is_public(method, path)
        try:
            decision = await self.guard(Access(method, path, public, headers))
        except NexusError as error:
            await Exchange(send, is_anthropic(path)).fail(error)  # Anthropic's shape there
            return
        if decision.identity is not None:
            who = decision.identity
            headers += [(b"x-nexus-subject", who.subject.encode()),
                        (b"x-nexus-role", who.role.encode())]  # fmt: skip
            scope.setdefault("state", {})["identity"] = who
        extra = decision.headers
        if not extra:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
