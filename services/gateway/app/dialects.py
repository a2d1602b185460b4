"""Error dialects: OpenAI's envelope everywhere, Anthropic's on the Messages API.

Anthropic-dialect clients (the anthropic SDK, Claude Code) read errors as
``{"type": "error", "error": {"type": ..., "message": ...}}`` and raise by status; on
``/v1/messages`` (and its ``/services/<name>/`` form) the gateway answers in that shape, so a
bad key is the SDK's ``AuthenticationError`` and not a parse failure. Everything else keeps the
OpenAI envelope (``NexusError.envelope``).

``error_event`` is the one SSE error event of either dialect: what a stream whose status line
already went out (``200 text/event-stream``) ends with when it fails (an upstream cut, the
total timeout, the gateway shutting down). ``Exchange.end_with_error`` sends it and ends the
response cleanly.
"""

from __future__ import annotations

from typing import Any

import orjson

from nexus_kit import NexusError

MESSAGES_PATH = "/v1/messages"
# Anthropic's error types by status (docs.anthropic.com/en/api/errors); others: api_error.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def is_anthropic(path: str) -> bool:
    """Whether a request path speaks Anthropic's Messages API (errors in its shape)."""
    if path.startswith(MESSAGES_PATH):
        return path == MESSAGES_PATH or path[len(MESSAGES_PATH)] == "/"
    return path.startswith("/services/") and (
        path.endswith(MESSAGES_PATH) or f"{MESSAGES_PATH}/" in path
    )


def anthropic_envelope(error: NexusError) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(error.status_code, "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def envelope(error: NexusError, anthropic: bool) -> dict[str, Any]:
    return anthropic_envelope(error) if anthropic else error.envelope()


def error_event(error: NexusError, anthropic: bool = False) -> bytes:
    """One SSE event carrying ``error`` as the dialect's clients expect it mid-stream.

    OpenAI SDKs raise on a ``data:`` object with an ``error`` key (chat and Responses
    streams alike); Anthropic's raise on ``event: error``."""
    if anthropic:
        return b"event: error\ndata: " + orjson.dumps(anthropic_envelope(error)) + b"\n\n"
    return b"data: " + orjson.dumps(error.envelope()) + b"\n\n"
