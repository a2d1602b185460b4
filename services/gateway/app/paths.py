"""Which path goes upstream: the client's raw bytes, cut on the raw form, checked both ways.

The routing table matches the *decoded* path (``scope["path"]``), but the request goes upstream
as the client sent it (``raw_path``: no re-quoting, so ``%2F`` inside a segment stays one
segment). Measuring the ``/services/<name>`` prefix on one form and cutting it from the other
sent ``/services/tem%70late/v1/echo`` to ``http://host:9000te/v1/echo`` (issue #12). Here the
prefix is cut from the raw path at its own segment boundary, and the result is accepted only
when it decodes to exactly the path the route matched; anything else is an unknown URL.

Dot segments (``.``/``..``, encoded or not) never route: an upstream or a proxy in front of it
may normalise them, so a path that matched ``/v1/items/{id}`` here could name another resource
there. A ``{param}`` is never filled by one, and no advertised literal path holds one, so such
a request is an unknown URL.
"""

from __future__ import annotations

from urllib.parse import unquote

from nexus_kit import NotFoundError
from nexus_kit.errors import quote_input

ALIAS_PREFIX = "/services/"
_DOT_SEGMENTS = frozenset({".", ".."})


def is_param_segment(segment: str) -> bool:
    """Whether a decoded segment may fill a ``{param}``: not empty, not ``.`` or ``..``."""
    return bool(segment) and segment not in _DOT_SEGMENTS


def upstream_target(method: str, path: str, raw: str, service: str | None, strip: int) -> str:
    """The raw path to send upstream for a request that matched ``path`` (decoded).

    ``service``/``strip`` come from the route: set for ``/services/<name>/...`` aliases."""
    if service is None:
        return raw
    head = len(ALIAS_PREFIX)
    cut = raw.find("/", head)
    if not raw.startswith(ALIAS_PREFIX) or cut < 0:
        raise unknown_url(method, path)
    rest = raw[cut:]
    if unquote(raw[head:cut]) != service or unquote(rest) != path[strip:]:
        raise unknown_url(method, path)  # e.g. a %2F in the name moved the boundary
    return rest


def unknown_url(method: str, path: str) -> NotFoundError:
    return NotFoundError(
        f"Unknown request URL: {quote_input(method, 16)} {quote_input(path)}.", code="unknown_url"
    )
