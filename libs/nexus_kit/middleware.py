"""One pure-ASGI middleware for request ids, the access log line, metrics and in-flight tracking.

Pure ASGI (not ``BaseHTTPMiddleware``) so streaming bodies pass through untouched and the
request-id contextvar is visible to the route and everything it calls. It runs on every
request of every service (the gateway's hot path included), so its work is kept flat: the
access line is rendered once (``logging.AccessLog``), metric children are cached.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_envelope
from .logging import AccessLog, get_logger
from .metrics import HttpMetrics
from .requestid import REQUEST_ID_HEADER, accept_or_generate, set_request_id
from .tracing import TRACING, ServerSpan, trace_id_of

SERVER_SEND = "nexus.server_send"  # the server's own send, for body chunks (app.NexusApp)
_QUIET_PATHS = frozenset({"/health", "/readyz", "/metrics"})
_ID_HEADER = REQUEST_ID_HEADER.encode()
_TRACEPARENT, _TRACESTATE = b"traceparent", b"tracestate"
log = get_logger("nexus.http")
access_log = AccessLog("nexus.http")


class InFlight:
    """Tracks running request tasks so a drain can wait for them or cut them at the deadline."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.idle = asyncio.Event()
        self.idle.set()
        self.cutting = False  # the drain's grace is over: cancellations are the drain's

    def enter(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
            self.idle.clear()

    def leave(self) -> None:
        task = asyncio.current_task()
        self.tasks.discard(task)  # type: ignore[arg-type]
        if not self.tasks:
            self.idle.set()

    def cancel_all(self) -> int:
        self.cutting = True
        for task in self.tasks:
            task.cancel()
        return len(self.tasks)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics, in_flight: InFlight) -> None:
        self.app = app
        self.metrics = metrics
        self.in_flight = in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_id = parent = parent_state = None
        for name, value in scope["headers"]:
            if name == _ID_HEADER:
                raw_id = value
            elif name == _TRACEPARENT:
                parent = value
            elif name == _TRACESTATE:
                parent_state = value
        request_id = accept_or_generate(raw_id)
        set_request_id(request_id)
        # Tracing on: this request's span (current for the app); off: the client's trace id.
        server_span = None
        if TRACING.enabled and scope["path"] not in _QUIET_PATHS:  # probes make no traces
            server_span = ServerSpan(scope["method"], scope["path"], parent, parent_state)
            trace_id: str | None = server_span.trace_id
        else:
            trace_id = trace_id_of(parent) if parent else None
        if trace_id:
            structlog.contextvars.bind_contextvars(request_id=request_id, trace_id=trace_id)
        else:
            structlog.contextvars.bind_contextvars(request_id=request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = False
        start = time.perf_counter()
        id_header = (_ID_HEADER, request_id.encode())

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        self.in_flight.enter()
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        except asyncio.CancelledError:
            if not self.in_flight.cutting:
                raise
            status = await _cut_at_shutdown(scope, send, started, id_header)
        except Exception:
            status = 500
            log.exception("unhandled error", method=scope["method"], path=scope["path"])
            if not started:
                await _send_500(send, id_header, request_id)
        finally:
            self.in_flight.leave()
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - start
            # A streamed response whose 200 went out but that ended with an error event
            # records the error's status (set by the app, e.g. the gateway's total timeout).
            status = scope["state"].get("outcome_status", status)
            route = getattr(scope.get("route"), "path", None) or "<unmatched>"
            method, path = scope["method"], scope["path"]
            self.metrics.observe(method, route, status, elapsed)
            quiet = path in _QUIET_PATHS and status < 400
            fields = {"method": method, "path": path, "status": status,
                      "duration_ms": round(elapsed * 1000, 2)}  # fmt: skip
            level = logging.DEBUG if quiet else logging.INFO
            access_log.emit(level, "request", fields, request_id, trace_id)
            if server_span is not None:
                server_span.end(method, route, status, request_id)
            structlog.contextvars.unbind_contextvars("request_id", "trace_id")


async def _cut_at_shutdown(
    scope: Scope, send: Send, started: bool, id_header: tuple[bytes, bytes]
) -> int:
    """The drain's grace ended with this request running: one log line, not a traceback."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    log.warning("request cut: shutdown grace over", method=scope["method"], path=scope["path"])
    if started:  # the status is gone; the connection closes with the body short
        return 499
    body = orjson.dumps(error_envelope(
        "The service is shutting down; retry the request.", "service_unavailable",
        "service_unavailable"))  # fmt: skip
    headers = [(b"content-type", b"application/json"), (b"retry-after", b"1"), id_header]
    try:
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    except Exception:  # the connection went with the shutdown
        return 499
    return 503


async def _send_500(send: Send, id_header: tuple[bytes, bytes], request_id: str) -> None:
    body = orjson.dumps(
        error_envelope(
            f"The server had an error while processing your request (request id {request_id}).",
            "server_error",
            "internal_error",
        )
    )
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [(b"content-type", b"application/json"), id_header],
        }
    )
    await send({"type": "http.response.body", "body": body})
