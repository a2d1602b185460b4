"""OpenAI paths without ``/v1``: a base URL set without it still reaches the same endpoints.

Some clients (LocalAI's docs, hand-written configs) are given ``http://host:8800`` as the
base URL and call ``/chat/completions``, ``/models``... Requests whose first segment is one of
the OpenAI API's resources are rewritten to ``/v1/...`` (``path`` and ``raw_path`` alike)
before auth and routing, so they are checked, routed, logged and counted exactly as the
``/v1`` form. Everything else (``/health``, ``/services/...``, a service's own paths) is left
alone. The hot path pays one ``startswith``.

``V1Prefix`` returns the next app's awaitable instead of awaiting it: it acts only before the
call, so it needs no coroutine frame of its own, which every open stream would hold for its
life (issue 14).
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.types import ASGIApp, Receive, Scope, Send

RESOURCES = frozenset(
    {
        "chat", "completions", "embeddings", "models", "responses", "messages", "images",
        "audio", "moderations", "rerank",
    }
)  # fmt: skip


def with_v1(path: str) -> str | None:
    """``/chat/completions`` -> ``/v1/chat/completions``; None when not an OpenAI path."""
    if path.startswith("/v1/"):
        return None
    first = path[1:].split("/", 1)[0]
    return "/v1" + path if first in RESOURCES else None


class V1Prefix:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "http" and not scope["path"].startswith("/v1/"):
            path = with_v1(scope["path"])
            if path is not None:
                raw = scope.get("raw_path") or scope["path"].encode()
                scope["path"], scope["raw_path"] = path, b"/v1" + raw
        return self.app(scope, receive, send)
