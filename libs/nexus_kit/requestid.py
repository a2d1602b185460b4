"""The current request's id, readable anywhere in the request's task (e.g. to forward upstream)."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

REQUEST_ID_HEADER = "x-request-id"
_request_id: ContextVar[str | None] = ContextVar("nexus_request_id", default=None)
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def current_request_id() -> str | None:
    return _request_id.get()


def set_request_id(value: str) -> None:
    _request_id.set(value)


def accept_or_generate(raw: bytes | None) -> str:
    """Keep a client's id when it is a sane token; otherwise mint a new one."""
    if raw:
        text = raw.decode("latin-1")
        if _VALID.match(text):
            return text
    return uuid.uuid4().hex


def forward_headers() -> dict[str, str]:
    """Headers a service adds to its own upstream calls so the request can be traced."""
    rid = current_request_id()
    return {"X-Request-ID": rid} if rid else {}
