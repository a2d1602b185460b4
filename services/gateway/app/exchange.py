"""One proxied exchange at the ASGI level: the request's head, and what was sent back so far.

``RequestHead.parse`` makes one pass over the client's headers: it keeps what is forwarded
(hop-by-hop headers, ``Host`` and the client's ``X-Request-ID`` dropped; the request's
current id added) and notes how the body comes; once a stream's start has gone out,
``release_raw`` empties the scope's list, which nothing reads again. ``Exchange`` wraps
``send`` and remembers whether the status line went out, because that decides how an error
can still be reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiohttp import StreamReader
from starlette.types import Send

from nexus_kit import NexusError, UpstreamError

from .dialects import envelope, error_event

# RFC 9110 §7.6.1, plus the non-standard ones proxies still see.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Host and Content-Length are set by the client library for the upstream; Expect is answered
# by uvicorn; the request id is replaced by the one this request runs under.
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"content-length", b"expect", b"x-request-id"}
# uvicorn adds its own Date and Server, and the kit its X-Request-ID: no duplicates.
_NOT_RETURNED = HOP_BY_HOP | {b"date", b"server", b"x-request-id"}
# CORS is the gateway's policy (``NEXUS_CORS_ORIGINS``): an upstream's own answer (vLLM's
# ``Access-Control-Allow-Origin: *`` by default) would open it to every origin.
_CORS_PREFIX = b"access-control-"
# Bodies of these types are streamed through as they arrive instead of being read first.
_STREAMED_TYPES = (b"multipart/", b"audio/", b"video/", b"image/", b"application/octet-stream")
SSE_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
_SSE_START = [(b"content-type", b"text/event-stream; charset=utf-8"), *SSE_HEADERS]
KEEPALIVE = b": keep-alive\n\n"
_LATE_ERROR_BYTES = 64 * 1024

BodyMode = Literal["none", "buffer", "stream"]
Headers = list[tuple[bytes, bytes]]


def as_list(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """ASGI request headers as a list to edit in place (servers give one; a test client may
    give a tuple)."""
    return headers if isinstance(headers, list) else list(headers)


@dataclass(slots=True)
class RequestHead:
    forward: list[tuple[str, str]]  # as the upstream client takes them (latin-1, like HTTP)
    content_type: bytes
    content_length: int | None
    mode: BodyMode
    raw: Iterable[tuple[bytes, bytes]]  # the scope's own header list, as parsed

    def release_raw(self) -> None:
        """Empty the request's header list once the response's start has gone out.

        The server's request object, the scope and every middleware frame hold that one list
        for as long as the response runs: an open stream kept its request's headers, ~5 KB
        with the openai SDK's 17 (issue 14). Not before the start: a middleware may read them
        when it passes (Starlette's CORS reads ``Origin`` then); after it, Nexus middleware
        touches nothing (``nexus_kit.app.NexusApp``)."""
        if isinstance(self.raw, list):
            self.raw.clear()

    @property
    def buffered(self) -> bool:
        return self.mode == "buffer"

    @property
    def declared_json(self) -> bool:
        return b"json" in self.content_type

    @property
    def json_like(self) -> bool:
        ctype = self.content_type
        return not ctype or b"json" in ctype or ctype.startswith(b"application/x-www-form")

    @classmethod
    def parse(cls, headers: Iterable[tuple[bytes, bytes]], request_id: str | None) -> RequestHead:
        kept: list[tuple[bytes, bytes]] = []
        ctype, length, chunked, listed = b"", None, False, b""
        for name, value in headers:  # ASGI header names are lower case
            if name == b"content-type":
                ctype = value.lower()
            elif name == b"content-length":
                length = int(value) if value.isdigit() else None
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"connection":
                listed = value
            if name not in _NOT_FORWARDED:
                kept.append((name, value))
        if listed:
            kept = _drop_listed(kept, listed)
        forward = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in kept]
        mode: BodyMode = "none"
        if chunked or (length or 0) > 0:
            mode = "stream" if ctype.startswith(_STREAMED_TYPES) else "buffer"
        if mode == "stream" and length is not None:
            forward.append(("content-length", str(length)))  # keep the framing
        if request_id:
            forward.append(("x-request-id", request_id))
        return cls(forward, ctype, length, mode, headers)


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's headers as the client gets them; SSE gets anti-buffering headers."""
    out: list[tuple[bytes, bytes]] = []
    sse = False
    listed = b""
    for name, value in raw:
        lname = name.lower()
        if lname == b"connection":
            listed = value
        if lname in _NOT_RETURNED or lname.startswith(_CORS_PREFIX):
            continue
        if lname == b"content-type" and value.startswith(b"text/event-stream"):
            sse = True
        out.append((lname, value))
    if listed:
        out = _drop_listed(out, listed)
    if sse:
        out = [h for h in out if h[0] not in (b"cache-control", b"x-accel-buffering")]
        out.extend(SSE_HEADERS)
    return out


def _drop_listed(headers: list[tuple[bytes, bytes]], listed: bytes) -> list[tuple[bytes, bytes]]:
    """Headers named in ``Connection`` are hop-by-hop too (RFC 9110 §7.6.1)."""
    names = {token.strip().lower() for token in listed.split(b",")}
    return [h for h in headers if h[0] not in names]


class Exchange:
    """``send`` with memory: status sent, response finished, SSE committed, client gone.

    ``sse``: the status line went out as ``200 text/event-stream`` (our keep-alive comment or
    the upstream's own stream), so a later error can only be an SSE error event. ``outcome``:
    the status such an error stands for (what the access log and metrics record)."""

    __slots__ = ("_body_send", "_send", "anthropic", "client_gone", "finished", "outcome", "sse",
                 "started", "status")  # fmt: skip

    def __init__(
        self, send: Send, anthropic: bool = False, server_send: Send | None = None
    ) -> None:
        self._send = send
        # Body chunks go straight to the server once the start went through every middleware
        # (nexus_kit.app.NexusApp): the wrappers only look at the start (issue 14).
        self._body_send = server_send or send
        self.anthropic = anthropic  # errors in Anthropic's shape (dialects.py)
        self.status = 500  # what the metrics say if nothing was ever sent
        self.outcome: int | None = None
        self.started = False
        self.finished = False
        self.sse = False
        self.client_gone = False

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status, self.started = status, True
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, chunk: bytes) -> None:
        if chunk:
            await self._body_send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def end(self, chunk: bytes = b"") -> None:
        self.finished = True
        await self._body_send({"type": "http.response.body", "body": chunk, "more_body": False})

    async def keepalive(self) -> None:
        """An SSE comment; the first one commits the response to ``200 text/event-stream``."""
        if not self.started:
            self.sse = True
            await self.start(200, list(_SSE_START))
        await self.body(KEEPALIVE)

    async def fail(self, error: NexusError) -> None:
        """Report an error however is still possible at this point of the response."""
        if self.finished or self.client_gone:
            return
        if not self.started:
            body = orjson.dumps(envelope(error, self.anthropic))
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode())]  # fmt: skip
            headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
            await self.start(error.status_code, headers)
            self.finished = True
            await self._send({"type": "http.response.body", "body": body})
        elif self.sse:
            await self.end_with_error(error)

    async def end_with_error(self, error: NexusError) -> None:
        """End a committed SSE stream: one error event in the request's dialect, then a clean
        end of the body (no cut connection). The reusable piece for any stream the gateway
        must stop (the total timeout, an upstream failure, shutdown)."""
        if self.finished or self.client_gone:
            return
        self.outcome = error.status_code
        await self.body(error_event(error, self.anthropic))
        await self.end()

    async def error_late(self, status: int, content: StreamReader) -> None:
        """The upstream answered an error after our keep-alives committed ``200``: end the
        stream with its error envelope (on one line) or ours. (A late 2xx is relayed by the
        proxy's own loop: only the status line is skipped.)"""
        raw = b""
        while len(raw) <= _LATE_ERROR_BYTES and (chunk := await content.readany()):
            raw += chunk
        doc = _error_envelope(raw)
        if doc is not None:  # the upstream's own error (OpenAI's or Anthropic's), on one line
            self.outcome = status
            event = b"event: error\n" if self.anthropic else b""
            await self.body(event + b"data: " + orjson.dumps(doc) + b"\n\n")
            await self.end()
        else:
            await self.fail(UpstreamError(f"The upstream answered {status}."))


def _error_envelope(raw: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    ok = isinstance(doc, dict) and isinstance(doc.get("error"), dict)
    return doc if ok else None
