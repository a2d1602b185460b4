"""The gateway's span for a proxied request (only made when tracing is on: ``TRACING.enabled``).

One CLIENT span per proxied request, a child of the kit's SERVER span, covering the upstream
call from the first attempt to the last byte relayed. Its context is what the upstream gets
as ``traceparent``/``tracestate`` (replacing the client's, which is this span's ancestor), for
every kind of upstream (Nexus services, Ollama, ``kind: openai``), so the upstream's own
spans are its children. Attributes:

- ``http.route``, ``http.request.method``, ``http.response.status_code``; ``nexus.service``,
  ``nexus.instance`` (the instance id), ``nexus.upstream.kind``, ``server.address``/``port``;
  ``nexus.failover`` when an attempt failed over to another instance;
- GenAI semantic conventions when the request names a model: ``gen_ai.operation.name``
  (``chat``, ``text_completion``, ``embeddings``, …), ``gen_ai.provider.name`` (and the older
  ``gen_ai.system``), ``gen_ai.request.model``; the span is named ``"{operation} {model}"``;
- the event ``gen_ai.first_token`` when a stream's first chunk is relayed, with
  ``gen_ai.server.time_to_first_token`` (seconds since the request reached the proxy);
- ``usage(...)``: the hook for the token usage reader (issue 13) to add
  ``gen_ai.usage.input_tokens``/``output_tokens`` and ``gen_ai.response.model``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from nexus_kit import NexusError
from nexus_kit.tracing import TRACEPARENT, TRACESTATE, TRACING

if TYPE_CHECKING:
    from .exchange import Exchange, RequestHead
    from .routing import Route, Target

_PROPAGATOR = TraceContextTextMapPropagator()
# OpenAI-style paths -> gen_ai.operation.name (the semconv's well-known values where one fits).
_OPERATIONS = (
    ("/chat/completions", "chat"),
    ("/completions", "text_completion"),
    ("/embeddings", "embeddings"),
    ("/responses", "chat"),
    ("/messages", "chat"),
    ("/images/generations", "image_generation"),
    ("/audio/speech", "speech"),
    ("/audio/transcriptions", "transcription"),
)
_PROVIDERS = {"ollama": "ollama", "openai": "openai"}
_current: ContextVar[ProxySpan | None] = ContextVar("nexus_proxy_span", default=None)
OFF = nullcontext()  # what the proxy enters instead of ``proxied`` when tracing is off


@contextmanager
def proxied(route: Route, model: str | None, head: RequestHead, ex: Exchange) -> Iterator[None]:
    """The span around one proxied request's upstream call (``with`` only when tracing is on)."""
    span = ProxySpan(route, model, head)
    reset = _current.set(span)
    try:
        yield
    except NexusError as error:  # rendered by the proxy right after: its status is the answer
        span.end(error.status_code, error if error.status_code >= 500 else None)
        raise
    except BaseException as error:
        span.end(ex.status, error)
        raise
    else:
        span.end(ex.status)
    finally:
        _current.reset(reset)


def current() -> ProxySpan | None:
    """The proxied request's span, for hooks deeper in the proxy (``None`` when off)."""
    return _current.get()


def opened(target: Target, status: int) -> None:
    span = _current.get()
    if span is not None:
        span.opened(target, status)


def first_chunk() -> None:
    span = _current.get()
    if span is not None:
        span.first_chunk()


def operation_of(path: str) -> str | None:
    for suffix, name in _OPERATIONS:
        if path.endswith(suffix):
            return name
    return None


class ProxySpan:
    """The span of one proxied request; ``end`` must be called once."""

    __slots__ = ("_instance", "_model", "_started", "span")

    def __init__(self, route: Route, model: str | None, head: RequestHead) -> None:
        self._started = time.perf_counter()
        self._instance: str | None = None
        self._model = model
        operation = operation_of(route.path)
        attributes: dict[str, str] = {
            "http.request.method": route.method,
            "http.route": route.path,
        }
        name = f"{route.method} {route.path}"
        if model:
            attributes["gen_ai.request.model"] = model
            if operation:
                attributes["gen_ai.operation.name"] = operation
                name = f"{operation} {model}"
        self.span: Span = TRACING.tracer.start_span(
            name, kind=SpanKind.CLIENT, attributes=attributes
        )
        _forward_context(head, self.span)

    def opened(self, target: Target, status: int) -> None:
        """The upstream answered: which instance, and with what status."""
        instance = target.instance
        span = self.span
        attributes: dict[str, str | int | bool] = {
            "nexus.service": instance.service,
            "nexus.instance": instance.instance_id,
            "nexus.upstream.kind": instance.kind,
            "http.response.status_code": status,
            **_address(instance.base_url),
        }
        if self._instance is not None and self._instance != instance.key:
            attributes["nexus.failover"] = True
        self._instance = instance.key
        if self._model:
            provider = _PROVIDERS.get(instance.kind, f"nexus.{instance.service}")
            attributes["gen_ai.provider.name"] = attributes["gen_ai.system"] = provider
        span.set_attributes(attributes)  # one call: the SDK locks per call
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))

    def first_chunk(self) -> None:
        """A stream's first chunk went to the client (time to first token)."""
        self.span.add_event(
            "gen_ai.first_token",
            {"gen_ai.server.time_to_first_token": time.perf_counter() - self._started},
        )

    def usage(
        self,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        response_model: str | None = None,
    ) -> None:
        """Token usage read from the response (the usage reader's hook)."""
        span = self.span
        if input_tokens is not None:
            span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        if output_tokens is not None:
            span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        if response_model:
            span.set_attribute("gen_ai.response.model", response_model)

    def end(self, status: int, error: BaseException | None = None) -> None:
        span = self.span
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        elif status >= 500:
            span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
        if status:
            span.set_attribute("nexus.client_status", status)
        span.end()


@lru_cache(maxsize=1024)
def _address(base_url: str) -> dict[str, str | int]:
    """``server.address``/``server.port`` of an instance (parsed once per base URL)."""
    parts = urlsplit(base_url)
    found: dict[str, str | int] = {}
    if parts.hostname:
        found["server.address"] = parts.hostname
    if parts.port:
        found["server.port"] = parts.port
    return found


def _forward_context(head: RequestHead, span: Span) -> None:
    """The upstream continues this span's trace: the client's trace headers are replaced."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    forward = [(n, v) for n, v in head.forward if n not in (TRACEPARENT, TRACESTATE)]
    forward.extend(carrier.items())
    head.forward[:] = forward
