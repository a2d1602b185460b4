"""The catch-all proxy: a pure-ASGI app behind the gateway's own routes.

Per request: resolve against the current table (one read, so a request sees one table),
read the body when it is JSON (to peek ``model``/``stream``; forwarded as the same bytes) or
stream it when it is not (uploads), narrow and pick an instance, send upstream over the one
pooled client (``client.py``: aiohttp, ADR 0005), and relay status, headers and body chunk
by chunk.

- Failover: a refused or timed-out connect goes to the next candidate; nothing has reached
  the client or the upstream yet. A streamed request body that has started is never resent.
- Stale keep-alive: the client's pool expires idle connections before uvicorn's 5 s, and a
  connection the upstream closed anyway (disconnected or reset before any response byte) is
  retried once (by aiohttp itself for idempotent methods, here for the others). That could
  repeat a request the upstream received but did not answer; the retry happens at most once.
- Timeouts: connect, first byte (``sock_read``, long on model routes as a cold model load
  takes minutes) and total (``UPSTREAM_TOTAL_TIMEOUT_S``).
- Streams (``"stream": true``): until the upstream's first byte arrives the client gets
  ``: keep-alive`` SSE comments every ``SSE_KEEPALIVE_S``; an error after that point is sent
  as an SSE ``data:`` event because the status line is gone.
- A client disconnect cancels the request task, which closes the upstream request (watched
  from ``liveness.WATCH_AFTER_S`` on: a quicker request costs no watcher task).
- Errors are the kit's: 404 unknown path / ``model_not_found``, 405, 400 bad JSON, 413,
  503 + ``Retry-After``, 502 connect or protocol failure, 504 timeout. Upstream responses,
  4xx and 5xx included, pass through unchanged, except an Ollama 404 for a named model
  (Ollama's own ``not_found_error``), which becomes our ``model_not_found``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import orjson
from starlette.types import Receive, Scope, Send
from yarl import URL

from nexus_kit import (
    NexusError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
    current_request_id,
    get_logger,
)
from nexus_kit.drain import drain_cut
from nexus_kit.errors import ModelNotFoundError
from nexus_kit.middleware import SERVER_SEND
from nexus_kit.tracing import TRACING

from . import client, spans
from .aliases import with_model
from .dialects import is_anthropic
from .discovery import describe_error
from .exchange import Exchange, RequestHead, response_headers
from .liveness import Watch, with_keepalive
from .openai_upstream import MissingCredentialError, forward_headers
from .paths import upstream_target
from .peek import NOTHING, InvalidJSONError, Peek, peek
from .readgaps import Gap, ReadGaps
from .routing import Route, Target, candidates
from .upstreams import UpstreamState
from .usage import METER_KEY, Tap, begin_usage

if TYPE_CHECKING:
    from .state import GatewayState

log = get_logger("nexus.gateway.proxy")


@dataclass(frozen=True, slots=True)
class Opened:
    """An upstream response whose headers arrived; it holds an in-flight slot until closed."""

    target: Target
    state: UpstreamState
    response: aiohttp.ClientResponse


class ClientGoneError(Exception):
    """The client went away while we were still reading its request body."""


_READ = asyncio.Event()  # waiting on a set Event returns at once, on any loop
_READ.set()


class Body:
    """A request body: bytes (replayable) or the client's stream (sent at most once)."""

    __slots__ = ("_receive", "data", "done", "gone", "started")

    def __init__(self, receive: Receive, data: bytes | None) -> None:
        self.data = data
        self._receive = receive
        self.started = False
        self.gone = False  # the client left mid-upload (aiohttp reports it as its own error)
        # A buffered body (the usual JSON request) shares one set event: an Event per request
        # (and its waiter deque) is ~670 bytes held for as long as a stream stays open.
        self.done = _READ if data is not None else asyncio.Event()

    @property
    def replayable(self) -> bool:
        return self.data is not None or not self.started

    def content(self) -> bytes | AsyncIterator[bytes] | None:
        if self.data is not None:
            return self.data or None
        return self._stream()

    async def _stream(self) -> AsyncIterator[bytes]:
        self.started = True
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                raise ClientGoneError()
            yield message.get("body", b"")
            if not message.get("more_body", False):
                self.done.set()
                return


class Proxy:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.settings = state.settings
        self.in_flight = 0
        s = self.settings
        connect = s.upstream_connect_timeout_s
        self._timeouts = {
            False: client.timeout(connect, s.upstream_first_byte_timeout_s),
            True: client.timeout(connect, s.llm_first_byte_timeout_s),
        }
        self._retry_after = math.ceil(s.health_probe_interval_s or s.eject_s)
        self._total_s = s.upstream_total_timeout_s or None
        self._read_limit = {
            False: s.upstream_first_byte_timeout_s,
            True: s.llm_first_byte_timeout_s,
        }
        # A stream's read timeout: one sweep for all of them, not a timer per chunk (readgaps.py).
        self.read_gaps = ReadGaps(min(self._read_limit.values()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        ex = Exchange(send, is_anthropic(scope["path"]), scope.get(SERVER_SEND))
        label = "<unmatched>"
        started = time.perf_counter()
        self.in_flight += 1
        try:
            route = self.state.table.resolve(scope["method"], scope["path"])
            scope["route"] = route  # the kit's access log and metrics label by its template
            label = route.path
            raw = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
            scope["nexus.upstream_path"] = upstream_target(
                scope["method"], scope["path"], raw, route.service, route.strip
            )  # cut on the raw form, checked against the decoded one (paths.py)
            await self._guarded(scope, receive, ex, route)
        except NexusError as error:
            await ex.fail(error)
        finally:
            self.in_flight -= 1
            if ex.outcome is not None or ex.client_gone:  # a committed stream ended by an
                # error event, or a client that left: what the access log and metrics record
                scope.setdefault("state", {})["outcome_status"] = ex.outcome or ex.status
            status = ex.outcome or ex.status
            self.state.metrics.observe(label, status, time.perf_counter() - started)
            if (meter := scope.get(METER_KEY)) is not None:  # the usage record (usagesink.py)
                self.state.usage.metering.end(meter, status, ex.client_gone)

    async def _guarded(self, scope: Scope, receive: Receive, ex: Exchange, route: Route) -> None:
        """Handle the request; a client disconnect cancels it (and with it the upstream call)."""
        task = asyncio.current_task()
        assert task is not None
        watch: Watch | None = None
        try:
            head = RequestHead.parse(scope["headers"], current_request_id())
            body = Body(receive, await self._read_body(receive, head))
            info = self._peek(body, head)
            models = self.state.aliases.get(info.model) if info.model else None
            targets = () if models else self._candidates(route, info.model, body, head)
            begin_usage(self.state.usage.metering, scope, route, info, body, bool(models))
            watch = Watch(receive, body.done, ex, task, self._total_s)
            # spans.py: the upstream call's span and traceparent; off, a shared no-op context.
            with spans.proxied(route, info.model, head, ex) if TRACING.enabled else spans.OFF:
                await self._forward(scope, ex, route, targets, head, body, info, models)
        except ClientGoneError:
            self._gone(ex, route)
        except asyncio.CancelledError:
            if watch is not None and watch.timed_out:
                task.uncancel()
                if ex.started:
                    log.warning("total timeout: stream ended with an error event",
                                path=route.path, total_s=self._total_s)  # fmt: skip
                raise UpstreamTimeoutError(
                    f"The upstream did not finish within {self._total_s:g} s.",
                    code="upstream_timeout",
                ) from None
            if not ex.client_gone:
                if not drain_cut(scope):
                    raise
                task.uncancel()  # the drain's grace is over: end it in-band, one line each
                log.warning("request ended: shutdown grace over", path=route.path,
                            streaming=ex.started)  # fmt: skip
                raise ServiceUnavailableError(
                    "The gateway is shutting down; retry the request.", retry_after=1
                ) from None
            task.uncancel()
            self._gone(ex, route)
        finally:
            if watch is not None:
                watch.cancel()

    @staticmethod
    def _gone(ex: Exchange, route: Route) -> None:
        ex.client_gone = True
        ex.status = 499  # nginx's "client closed request", for the metrics
        log.info("client disconnected; upstream request cancelled", path=route.path)

    async def _read_body(self, receive: Receive, head: RequestHead) -> bytes | None:
        if head.mode == "none":
            return b""
        return await self._read_json(receive, head) if head.buffered else None

    async def _read_json(self, receive: Receive, head: RequestHead) -> bytes:
        limit = self.settings.max_json_body_bytes
        if head.content_length is not None and head.content_length > limit:
            raise PayloadTooLargeError(f"Request body over {limit} bytes.")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGoneError()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"Request body over {limit} bytes.")
            if not message.get("more_body", False):
                return chunk if not chunks else b"".join([*chunks, chunk])
            chunks.append(chunk)

    @staticmethod
    def _check_json(body: Body, head: RequestHead) -> None:
        """On an error path only: a body that is not JSON gets our 400 ``invalid_json``.

        The hot path peeks and never parses (peek.py); a malformed body that looks like an
        object is noticed when routing or the upstream refuses it, and reported as what it is
        instead of a 404 for its model or the upstream's own 400."""
        if body.data and head.declared_json:
            try:
                orjson.loads(body.data)
            except orjson.JSONDecodeError:
                raise InvalidJSONError() from None

    def _candidates(
        self, route: Route, model: str | None, body: Body, head: RequestHead
    ) -> tuple[Target, ...]:
        try:
            return candidates(route, model)
        except NexusError:
            self._check_json(body, head)
            raise

    @staticmethod
    def _peek(body: Body, head: RequestHead) -> Peek:
        if not body.data or not head.json_like:
            return NOTHING
        if head.declared_json:
            return peek(body.data)
        with contextlib.suppress(NexusError):  # curl -d: form type, often a JSON body
            return peek(body.data)
        return NOTHING

    async def _forward(
        self,
        scope: Scope,
        ex: Exchange,
        route: Route,
        targets: tuple[Target, ...],
        head: RequestHead,
        body: Body,
        info: Peek,
        models: tuple[str, ...] | None = None,
    ) -> None:
        keepalive = info.stream and route.streaming
        if models:
            opening = self._open_alias(scope, route, head, body, models)
        else:
            opening = self._open(scope, route, targets, head, body)
        if keepalive:
            s = self.settings
            opened = await with_keepalive(
                ex, s.sse_keepalive_s, opening, self._abandon, first_s=s.sse_first_comment_s
            )
        else:
            opened = await opening
        if (meter := scope.get(METER_KEY)) is not None:  # usage.py reads usage on the way out
            meter.tap_response(opened.response, opened.target)
        read_limit = self._read_limit[route.slow] if keepalive else None
        await self._relay(ex, opened, info, read_limit, body, head)

    async def _open_alias(
        self, scope: Scope, route: Route, head: RequestHead, body: Body, models: tuple[str, ...]
    ) -> Opened:
        """An alias: its models in order, the next on 503 / no ready instance / connect failure
        (nothing reached the client yet), with the body's ``model`` set to the one tried."""
        assert body.data is not None  # a model was peeked: the body is buffered JSON
        last: NexusError | None = None
        for n, model in enumerate(models):
            try:
                targets = candidates(route, model)
            except NexusError as error:
                last = error
                continue
            attempt = Body(body._receive, with_model(body.data, model))
            try:
                opened = await self._open(scope, route, targets, head, attempt)
            except (ServiceUnavailableError, UpstreamError) as error:
                last = error
                continue
            if opened.response.status == 503 and n + 1 < len(models):
                log.info("alias fallback: upstream 503", model=model)
                self._abandon(opened)
                continue
            return opened
        self._check_json(body, head)
        raise last or ServiceUnavailableError("No model of this alias is served right now.")

    async def _open(
        self, scope: Scope, route: Route, targets: tuple[Target, ...], head: RequestHead, body: Body
    ) -> Opened:
        """Send to the best candidate, failing over on connect errors; the response is open."""
        tried: set[str] = set()
        stale_retry = scope["method"] not in client.RETRIED_BY_CLIENT
        last: NexusError | None = None
        while (target := self.state.balancer.pick(targets, tried)) is not None:
            state = self.state.upstreams.state(target.key)
            state.in_flight += 1
            try:
                return Opened(target, state, await self._send(scope, route, target, head, body))
            except client.CONNECT as exc:
                state.in_flight -= 1
                self._check_gone(body)
                self.state.upstreams.failure(target.key, describe_error(exc))
                if not body.replayable:
                    raise UpstreamError(_connect_message(target, exc)) from None
                tried.add(target.key)
                last = UpstreamError(_connect_message(target, exc))
            except client.TIMEOUT as exc:
                state.in_flight -= 1
                self.state.upstreams.failure(target.key, describe_error(exc))
                raise UpstreamTimeoutError(
                    f"The upstream {target.instance.service} did not answer in time."
                ) from None
            except client.ClientError as exc:  # stale connection or a broken response
                state.in_flight -= 1
                self._check_gone(body)
                if not (stale_retry and body.replayable and isinstance(exc, client.STALE)):
                    self.state.upstreams.failure(target.key, describe_error(exc))
                    raise UpstreamError(f"The upstream {target.instance.service} failed.") from None
                stale_retry = False  # probably a pooled connection it had just closed
            except MissingCredentialError as exc:
                state.in_flight -= 1
                log.error("upstream credential missing", upstream=target.key, error=str(exc))
                raise UpstreamError(
                    f"The upstream service {target.instance.service} is not configured."
                ) from None
            except BaseException:
                state.in_flight -= 1
                raise
        raise last or ServiceUnavailableError(
            f"No ready instance serves {route.method} {route.path} right now.",
            retry_after=self._retry_after,
        )

    @staticmethod
    def _check_gone(body: Body) -> None:
        if body.gone:  # the upload failed because the client left, not the upstream
            raise ClientGoneError()

    async def _send(
        self, scope: Scope, route: Route, target: Target, head: RequestHead, body: Body
    ) -> aiohttp.ClientResponse:
        url = target.instance.base_url + scope["nexus.upstream_path"]
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        headers = head.forward
        if target.instance.kind != "nexus":  # client credentials stay here; an upstream key goes
            headers = forward_headers(target.instance, headers)
        started = time.perf_counter()
        response = await self.state.client.request(
            scope["method"],
            URL(url, encoded=True),  # as the client sent it: no re-quoting
            headers=headers,
            data=body.content(),
            allow_redirects=False,
            timeout=self._timeouts[route.slow],
        )
        self.state.metrics.observe_upstream(target.instance.service, time.perf_counter() - started)
        return response

    async def _relay(
        self,
        ex: Exchange,
        opened: Opened,
        info: Peek,
        read_limit: float | None,
        body: Body,
        head: RequestHead,
    ) -> None:
        """Relay the response; ``read_limit``: a stream (``"stream": true`` on a streaming
        route), whose longest silence is that many seconds (``readgaps.py``)."""
        target, resp = opened.target, opened.response
        gap: Gap | None = None
        try:
            status = resp.status
            if TRACING.enabled:
                spans.opened(target, status)
            if status >= 400 and not ex.started:
                self._check_json(body, head)  # an invalid body: our 400, not theirs
            head.forward = []  # sent, never sent again: not held for a stream's life (~1.4 KB)
            if status == 404 and target.instance.kind == "ollama" and info.model:
                await resp.read()  # Ollama's own not_found_error for a model it lacks
                raise ModelNotFoundError(info.model)
            if status >= 500:
                self.state.upstreams.failure(target.key, f"HTTP {status}")
            else:
                self.state.upstreams.success(target.key)
            content = resp.content
            if read_limit is not None:  # a stream: its read timeout is swept, not re-armed
                gap = self.read_gaps.watch(resp, read_limit)
            if ex.started:  # keep-alive comments went out: the status line is gone
                if not 200 <= status < 300:
                    await ex.error_late(status, content)  # in-band
                    return
            else:
                await ex.start(status, response_headers(resp.raw_headers))
                if read_limit is not None:
                    ex.sse = resp.content_type == "text/event-stream"
            if read_limit is not None:  # comments go on until the first event, late or not
                head.release_raw()  # the start went out: the request headers are not held
                client.shed_request_headers(resp)  # for the stream's life, nor aiohttp's copy
                await self._first_chunk(ex, content)
            # The usage tap is fed in this loop, not awaited around the read: one coroutine less
            # per event, and per open stream while it waits (issue 14).
            tap = content if isinstance(content, Tap) else None
            reader = tap.reader if tap is not None else content
            while True:  # the last chunk goes out with the end of the body: one send less
                chunk = await reader.readany()
                eof = reader.at_eof()
                if tap is not None:
                    chunk = tap.take(chunk, eof)
                if eof:
                    await ex.end(chunk)
                    break
                await ex.body(chunk)  # nothing yet (an event held back by the tap): no send
        except client.ClientError as exc:
            self.state.upstreams.failure(target.key, describe_error(exc))
            log.warning("upstream failed mid-response", upstream=target.key,
                        error=describe_error(exc), started=ex.started)  # fmt: skip
            service = target.instance.service
            error: NexusError = (  # silent past its read limit: a timeout, as before the head
                UpstreamTimeoutError(f"The upstream {service} did not answer in time.")
                if isinstance(exc, client.TIMEOUT)
                else UpstreamError(f"The upstream {service} failed.")
            )
            if not ex.started:
                raise error from None
            if ex.sse:  # a stream: say so in-band and end it cleanly
                await ex.end_with_error(error)
            # Otherwise the status is sent, so all we can do is cut the response short.
        finally:
            self.read_gaps.forget(gap)
            opened.state.in_flight -= 1
            resp.release()  # back to the pool when read to the end, closed otherwise

    async def _first_chunk(self, ex: Exchange, content: aiohttp.StreamReader) -> None:
        """Forward the first chunk of a stream, with keep-alive comments while it is awaited."""
        first = await with_keepalive(ex, self.settings.sse_keepalive_s, content.readany())
        if first:
            await ex.body(first)
            if TRACING.enabled:
                spans.first_chunk()

    @staticmethod
    def _abandon(opened: Opened) -> None:
        """Release a response we will not relay: its in-flight slot and its connection."""
        opened.state.in_flight -= 1
        opened.response.close()


def _connect_message(target: Target, exc: Exception) -> str:
    """The client learns which service failed; the address and the exception go to the log."""
    log.warning("upstream connect failed", upstream=target.key, url=target.instance.base_url,
                error=describe_error(exc))  # fmt: skip
    return f"Could not connect to the upstream service {target.instance.service}."
