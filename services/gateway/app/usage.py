"""Token usage read from responses as they pass through, one record per metered request.

The proxy hands each metered request a ``Meter`` (``Metering.begin``): it may add
``stream_options.include_usage`` to a streamed chat/completions request the client did not ask
it for, wraps the upstream body in a ``Tap`` (same ``readany``/``at_eof`` as aiohttp's reader)
and, when the request ends however it ends, builds the record and hands it to delivery
(``usagesink.py``) and the token limiter (``tokenlimit.py``).

Nothing is buffered on the way to the client. A plain JSON body is copied aside (up to a bound)
and parsed once it ended; an SSE stream is cut into whole events (an event split across reads
is reassembled in a side buffer) and only events that can carry usage are parsed. The bytes
the client gets are the upstream's, except the extra ``choices: []`` usage chunk the gateway
asked for, which is removed (whole events are held back only in that mode, until complete).

Where usage is read: chat/completions (``usage``, streamed: the final usage chunk), the
Responses API (``response.completed``/``incomplete``/``failed``), Anthropic Messages
(``message_start`` + ``message_delta``), embeddings (``usage.prompt_tokens``), images (how many,
and the requested size), speech (input characters, from the request). Counts that are missing,
negative or not integers are recorded as unknown (``None``), never as zero.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from aiohttp import ClientResponse, StreamReader
from starlette.types import Scope

from nexus_kit import current_request_id, get_logger

if TYPE_CHECKING:
    from .peek import Peek
    from .routing import Route, Target

log = get_logger("nexus.gateway.usage")
METER_KEY = "nexus.usage"  # where a request's Meter lives in the ASGI scope

# Route template (or its last segments, for /services/<name>/... and prefix-less paths) -> kind.
KINDS = {
    "/v1/chat/completions": "completions",
    "/v1/completions": "completions",
    "/v1/responses": "completions",
    "/v1/messages": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/images/generations": "images",
    "/v1/audio/speech": "audio_speeches",
}
_INJECTABLE = frozenset({"/chat/completions", "/completions"})
_JSON_COPY_LIMIT = 64 * 1024 * 1024
_EVENT_END = re.compile(rb"\r?\n\r?\n|\r\r")
_RESPONSE_ENDS = (b"response.completed", b"response.incomplete", b"response.failed")
_EVENT_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")
_INCLUDE = b',"stream_options":{"include_usage":true}'


def kind_of(path: str) -> str | None:
    """The usage kind of a route: its template, also under ``/services/<name>`` or without
    ``/v1``; None for everything else (not metered)."""
    if path.startswith("/services/"):
        path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else path
    found = KINDS.get(path)
    if found is None and not path.startswith("/v1/"):
        found = KINDS.get("/v1" + path)
    return found


def may_carry_usage(data: bytes) -> bool:
    """Whether SSE bytes may hold usage: a non-null ``"usage"`` or a final Responses/Anthropic
    event. Substring scans only, cheapest first: it runs for every relayed event, and with
    ``include_usage`` every chunk says ``"usage":null`` (~1.4 us here, was ~4.7)."""
    if b"message_start" in data or (
        b"response." in data and any(end in data for end in _RESPONSE_ENDS)
    ):
        return True
    at = data.find(b'"usage"')
    while at != -1:
        at += 7
        if not data[at : at + 16].lstrip(b" \t\r\n:").startswith(b"null"):
            return True
        at = data.find(b'"usage"', at)
    return False


def count(value: Any) -> int | None:
    """A token count as the upstream gave it; anything but a non-negative integer is unknown."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53:
        return value
    return None


@dataclass(slots=True)
class Counts:
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    images: int | None = None
    image_size: str | None = None
    characters: int | None = None
    served_model: str | None = None
    seen: bool = False  # a usage object (well-formed or not) was found

    @property
    def total(self) -> int:
        return (self.input_tokens or 0) + (self.output_tokens or 0)


class Sink(Protocol):
    def finished(self, meter: Meter) -> None: ...


class Meter:
    """One metered request: what it asked, what the upstream said it used, how it ended."""

    __slots__ = (
        "alias", "body_complete", "counts", "first_at", "identity", "injected", "kind", "model",
        "request_id", "route", "started", "started_wall", "streamed", "target",
    )  # fmt: skip

    def __init__(self, kind: str, route: Route, model: str | None, stream: bool,
                 identity: Any, request_id: str | None) -> None:  # fmt: skip
        self.kind = kind
        self.route = route
        self.model = model
        self.alias: str | None = None
        self.streamed = stream
        self.identity = identity
        self.request_id = request_id
        self.started = time.perf_counter()
        self.started_wall = time.time()
        self.first_at: float | None = None
        self.injected = False
        self.counts = Counts()
        # None: no Tap on the body; False until the Tap sees its end. A flag, not the Tap: a
        # Meter <-> Tap cycle made each request's meter, tap and upstream reader garbage that
        # only the cyclic collector frees (issue 14: the collector's passes are the tail).
        self.body_complete: bool | None = None
        self.target: Target | None = None

    # --- the request ----------------------------------------------------------------------
    def prepare(self, data: bytes | None) -> bytes | None:
        """The body to send upstream: with ``include_usage`` added where the client left it out;
        request-side counts (image size, speech characters) are read here."""
        if not data:
            return data
        if self.kind == "images" or self.kind == "audio_speeches":
            self._request_counts(data)
            return data
        path = self.route.path
        if not (self.streamed and any(path.endswith(p) for p in _INJECTABLE)):
            return data
        if b'"include_usage"' in data or b'"stream_options"' in data:
            return self._with_option(data)
        end = data.rstrip().rfind(b"}")
        if end <= 0:
            return data
        self.injected = True
        return data[:end] + _INCLUDE + data[end:]

    def _with_option(self, data: bytes) -> bytes:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return data
        options = doc.get("stream_options") if isinstance(doc, dict) else None
        if options is None:
            options = doc["stream_options"] = {}
        if not isinstance(options, dict) or options.get("include_usage") is True:
            return data  # the client asked for it (or sent something we leave to the upstream)
        options["include_usage"] = True
        self.injected = True
        return orjson.dumps(doc)

    def _request_counts(self, data: bytes) -> None:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(doc, dict):
            return
        if self.kind == "audio_speeches" and isinstance(doc.get("input"), str):
            self.counts.characters = len(doc["input"])
        elif self.kind == "images":
            size = doc.get("size")
            self.counts.image_size = size[:32] if isinstance(size, str) else None

    # --- the response ---------------------------------------------------------------------
    def tap_response(self, response: ClientResponse, target: Target) -> None:
        """Put a ``Tap`` between the upstream's body and the proxy's relay loop."""
        response.content = self.wrap(response.content, target, response.content_type)

    def wrap(self, content: StreamReader, target: Target, content_type: str) -> StreamReader:
        """The upstream body as the client should get it; counts read on the way."""
        self.target = target
        sse = content_type.startswith("text/event-stream")
        tap = Tap(self, content, sse, strip=self.injected and sse)
        return tap  # type: ignore[return-value]  # duck-typed: readany/at_eof/read

    def first_byte(self) -> None:
        if self.first_at is None:
            self.first_at = time.perf_counter()

    def read_json(self, raw: bytes) -> None:
        if b'"usage"' not in raw and not (self.kind == "images" and b'"data"' in raw):
            return  # nothing to read: no parse
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if isinstance(doc, dict):
            self._document(doc)

    def _document(self, doc: dict[str, Any]) -> None:
        c = self.counts
        if isinstance(doc.get("model"), str):
            c.served_model = doc["model"][:256]
        if self.kind == "images" and isinstance(doc.get("data"), list):
            c.images = len(doc["data"])
        usage = doc.get("usage")
        if "usage" in doc and usage is not None:
            self._usage(usage)

    def _usage(self, usage: Any) -> None:
        c = self.counts
        c.seen = True
        if not isinstance(usage, dict):
            c.input_tokens = c.output_tokens = None
            return
        if "prompt_tokens" in usage:  # OpenAI chat/completions/embeddings
            c.input_tokens = count(usage.get("prompt_tokens"))
            if self.kind != "embeddings":
                c.output_tokens = count(usage.get("completion_tokens"))
            details = usage.get("prompt_tokens_details")
        else:  # Responses API and Anthropic
            if "input_tokens" in usage:
                c.input_tokens = count(usage.get("input_tokens"))
                cache_read = count(usage.get("cache_read_input_tokens"))
                if cache_read is not None and c.input_tokens is not None:
                    c.cached_tokens = cache_read
            if "output_tokens" in usage:
                c.output_tokens = count(usage.get("output_tokens"))
            details = usage.get("input_tokens_details")
        if isinstance(details, dict) and "cached_tokens" in details:
            c.cached_tokens = count(details.get("cached_tokens"))

    def event(self, data: bytes) -> bool:
        """One SSE ``data`` payload that may carry usage; True when it is the injected chunk."""
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(doc, dict):
            return False
        kind = doc.get("type")
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            response = doc.get("response")
            if isinstance(response, dict):
                self._document(response)
            return False
        if kind == "message_start":
            message = doc.get("message")
            if isinstance(message, dict):
                self._document(message)
            return False
        if kind == "message_delta":
            usage = doc.get("usage")
            if isinstance(usage, dict) and "output_tokens" in usage:
                self.counts.seen = True
                self.counts.output_tokens = count(usage.get("output_tokens"))
            return False
        self._document(doc)
        return self.injected and doc.get("choices") == [] and doc.get("usage") is not None

    # --- the end --------------------------------------------------------------------------
    def outcome(self, status: int, client_gone: bool) -> str:
        if client_gone:
            return "client_gone"
        if status == 504:
            return "timeout"
        if status >= 500:
            return "upstream_error"
        if status >= 400:
            return "error"
        if self.body_complete is False:
            return "incomplete"
        return "ok"

    def record(self, status: int, client_gone: bool) -> dict[str, Any]:
        c, who, target = self.counts, self.identity, self.target
        now = time.perf_counter()
        return {
            "id": os.urandom(16).hex(),  # 128 random bits, as a uuid4 has (122), cheaper
            "request_id": self.request_id,
            "created_at": int(self.started_wall),
            "key_id": getattr(who, "key_id", None),
            "subject": getattr(who, "subject", None),
            "endpoint": self.route.path[:256],
            "kind": self.kind,
            "model": self.model[:256] if self.model else None,
            "served_model": c.served_model,
            "alias": self.alias,
            "service": target.instance.service if target else self.route.service,
            "instance": target.instance.instance_id if target else None,
            "status": status,
            "outcome": self.outcome(status, client_gone),
            "input_tokens": c.input_tokens,
            "output_tokens": c.output_tokens,
            "cached_tokens": c.cached_tokens,
            "images": c.images,
            "image_size": c.image_size,
            "characters": c.characters,
            "duration_ms": int((now - self.started) * 1000),
            "ttft_ms": None
            if self.first_at is None
            else int((self.first_at - self.started) * 1000),
            "streamed": self.streamed,
        }


class Tap:
    """``readany``/``at_eof``/``read`` over the upstream body, counting as it goes."""

    __slots__ = ("_buf", "_content", "_copied", "_copy", "meter", "sse", "strip")

    def __init__(self, meter: Meter, content: StreamReader, sse: bool, strip: bool) -> None:
        self.meter = meter
        self._content = content
        self.sse = sse
        self.strip = strip
        self._buf = bytearray()
        self._copy: list[bytes] = []
        self._copied = 0
        meter.body_complete = False  # until the end is seen (``_end``)

    def __getattr__(self, name: str) -> Any:
        # aiohttp's own calls on ``response.content`` (exception, set_exception...) reach the
        # real reader: the Tap only stands in for the reads.
        return getattr(self._content, name)

    def at_eof(self) -> bool:
        return self._content.at_eof()

    async def read(self, n: int = -1) -> bytes:
        out = bytearray()
        while chunk := await self.readany():
            out += chunk
        return bytes(out)

    @property
    def reader(self) -> StreamReader:
        """The upstream body itself: a relay loop reads it and hands each chunk to ``take``
        (one coroutine less per event than ``readany``, which holds one per open stream)."""
        return self._content

    async def readany(self) -> bytes:
        while True:
            chunk = await self._content.readany()
            eof = self._content.at_eof()
            out = self.take(chunk, eof)
            if eof or out or not chunk:
                return out

    def take(self, chunk: bytes, eof: bool) -> bytes:
        """Count ``chunk`` (read from ``reader``; ``eof``: it was the last); returns what the
        client gets for it, possibly nothing yet (an event cut in two is held back)."""
        if chunk:
            self.meter.first_byte()
        out = self._feed(chunk)
        if eof:
            out += self._end()
        return out

    def _feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        if not self.sse:
            if self._copied + len(chunk) <= _JSON_COPY_LIMIT:
                self._copy.append(chunk)
                self._copied += len(chunk)
            return chunk
        if not self._buf and chunk.endswith(_EVENT_ENDS) and not may_carry_usage(chunk):
            return chunk  # whole events, none with usage: nothing to cut or read
        self._buf += chunk
        if not self.strip:
            self._events(keep=False)
            return chunk
        return self._events(keep=True)

    def _events(self, keep: bool) -> bytes:
        """Handle the whole events in the side buffer; with ``keep``, return them (minus the
        injected usage chunk) and hold back the incomplete tail."""
        buf = self._buf
        out = bytearray()
        pos = 0
        while (match := _EVENT_END.search(buf, pos)) is not None:
            event = bytes(buf[pos : match.end()])
            pos = match.end()
            drop = self._event(event)
            if keep and not drop:
                out += event
        del buf[:pos]
        return bytes(out)

    def _event(self, event: bytes) -> bool:
        if not may_carry_usage(event):
            return False
        data = b"\n".join(
            line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")
        )
        return bool(data) and data != b"[DONE]" and self.meter.event(data)

    def _end(self) -> bytes:
        if self.meter.body_complete:
            return b""
        self.meter.body_complete = True
        if not self.sse:
            self.meter.read_json(b"".join(self._copy) if self._copied < _JSON_COPY_LIMIT else b"")
            self._copy.clear()
            return b""
        rest = bytes(self._buf)  # an unterminated last event: counted, passed on as it came
        self._buf.clear()
        drop = bool(rest.strip()) and self._event(rest)
        return b"" if not self.strip or drop else rest


class Metering:
    """Starts meters for metered routes; finished meters go to ``sink`` (delivery, limits)."""

    def __init__(self, finished: Callable[[Meter, int, bool], None], enabled: bool = True) -> None:
        self.finished = finished
        self.enabled = enabled

    def begin(self, route: Route, model: str | None, stream: bool, identity: Any,
              request_id: str | None) -> Meter | None:  # fmt: skip
        if not self.enabled:
            return None
        kind = kind_of(route.path)
        if kind is None:
            return None
        return Meter(kind, route, model, stream, identity, request_id)

    def end(self, meter: Meter, status: int, client_gone: bool) -> None:
        """Never raises: accounting must not turn a served request into an error."""
        try:
            self.finished(meter, status, client_gone)
        except Exception as exc:
            log.error("usage record failed", error=repr(exc)[:200], path=meter.route.path)


def begin_usage(
    metering: Metering, scope: Scope, route: Route, info: Peek, body: Any, alias: bool
) -> None:
    """Start metering a proxied request (``scope[METER_KEY]``); may rewrite ``body.data``."""
    identity = scope.get("state", {}).get("identity")
    meter = metering.begin(route, info.model, info.stream, identity, current_request_id())
    if meter is None:
        return
    scope[METER_KEY] = meter
    meter.alias = info.model if alias else None
    body.data = meter.prepare(body.data)
