"""Where a client's key comes from: ``Authorization: Bearer``, ``x-api-key`` or ``api-key``.

OpenAI SDKs send ``Authorization: Bearer <key>``; Anthropic clients (the anthropic SDK with
``api_key``, Claude Code with ``ANTHROPIC_API_KEY``) send ``x-api-key``; Azure-style clients
send ``api-key``. A non-empty ``Authorization`` wins; otherwise the first non-empty key header
is read as if it were a bearer. None of them ever goes upstream to a server that is not a
Nexus service (``openai_upstream.forward_headers``).
"""

from __future__ import annotations

from collections.abc import Iterable

KEY_HEADERS = (b"x-api-key", b"api-key")
# The gateway's admin API for model aliases (aliases.py): admins only, like /v1/routes.
ALIAS_ADMIN = "/v1/aliases"


def credential_header(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The ``Authorization`` value to check: as sent, or built from a key header."""
    key: bytes | None = None
    for name, value in headers:
        if name == b"authorization" and value.strip():
            return value
        if key is None and name in KEY_HEADERS and value.strip():
            key = value.strip()
    return b"Bearer " + key if key is not None else None


def is_alias_admin(path: str) -> bool:
    return path == ALIAS_ADMIN or path.startswith(ALIAS_ADMIN + "/")
