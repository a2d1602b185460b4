"""OpenTelemetry tracing for every Nexus service: W3C ``traceparent``, OTLP export, off by default.

Tracing is on in a process when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set and ``OTEL_SDK_DISABLED`` is not ``true``; the
other standard variables apply as the SDK reads them (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_BSP_*``,
``OTEL_EXPORTER_OTLP_HEADERS``…). Spans go out over OTLP/HTTP (protobuf) from a batch
processor's thread. With nothing set nothing is created, exported or started: the kit's
middleware checks one attribute (``TRACING.enabled``) per request, and a client's
``traceparent`` still reaches the log lines (its trace id) and, at the gateway, the upstream
(forwarded unchanged).

When on, the kit's middleware opens a SERVER span per request, continuing the client's trace
from ``traceparent``/``tracestate`` (W3C Trace Context), and makes it current so every span
the service opens (``span()``) is its child; outgoing calls carry the current context with
``inject()``. Tests hand in their own provider (``TRACING.use(provider)``), e.g. one with the
SDK's in-memory exporter.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NoOpTracer, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from .settings import ServiceSettings

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_PROPAGATOR = TraceContextTextMapPropagator()
# version-traceid-parentid-flags; an all-zero trace id is invalid (W3C Trace Context §3.2.2.3).
_TRACEPARENT = re.compile(rb"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE = b"0" * 32
_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for tracing (an OTLP endpoint, the SDK not disabled)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in _ENDPOINT_VARS)


def trace_id_of(traceparent: bytes | None) -> str | None:
    """The trace id of a valid ``traceparent`` header value, else ``None``."""
    if not traceparent:
        return None
    found = _TRACEPARENT.match(traceparent)
    if found is None or found.group(1) == _ZERO_TRACE:
        return None
    return found.group(1).decode()


class Tracing:
    """The process's tracing switch and tracer; one instance, ``TRACING``.

    Several kit apps can share a process (tests): the provider made from the environment is
    shut down (flushing its spans) when the last of them stops. A provider handed in with
    ``use`` belongs to the caller, who ends it with ``clear``.
    """

    def __init__(self) -> None:
        self.enabled = False
        self.tracer: Tracer = NoOpTracer()
        self._provider: TracerProvider | None = None
        self._pinned = False
        self._users = 0

    def start(self, settings: ServiceSettings) -> None:
        """Called by the kit's lifespan: turn tracing on when the environment asks for it."""
        self._users += 1
        if self._pinned or self._provider is not None or not wanted():
            return
        self._provider = _provider_from_env(settings)
        self.tracer = self._provider.get_tracer("nexus_kit")
        self.enabled = True

    def stop(self) -> None:
        """Called at the end of the kit's lifespan; the last app out flushes and shuts down."""
        self._users = max(0, self._users - 1)
        if self._users or self._pinned or self._provider is None:
            return
        provider, self._provider = self._provider, None
        self.enabled = False
        self.tracer = NoOpTracer()
        provider.shutdown()  # flushes the batch processor (bounded by its export timeout)

    async def astop(self) -> None:
        """``stop`` off the event loop: the last flush is a blocking HTTP export."""
        await asyncio.to_thread(self.stop)

    def use(self, provider: TracerProvider) -> None:
        """Trace with the caller's provider (tests) until ``clear``."""
        self._pinned = True
        self._provider = provider
        self.tracer = provider.get_tracer("nexus_kit")
        self.enabled = True

    def clear(self) -> None:
        self._pinned = False
        self._provider = None
        self.tracer = NoOpTracer()
        self.enabled = False


TRACING = Tracing()


def _provider_from_env(settings: ServiceSettings) -> TracerProvider:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes: dict[str, Any] = {
        "service.version": settings.service_version,
        "service.instance.id": settings.instance_id,
        "service.namespace": "nexus",
    }
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = settings.service_name
    provider = TracerProvider(resource=Resource.create(attributes))  # sampler from OTEL_TRACES_*
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


class ServerSpan:
    """The span of one incoming request, current while the request runs (kit middleware)."""

    __slots__ = ("span", "token", "trace_id")

    def __init__(self, method: str, path: str, traceparent: bytes | None, tracestate: bytes | None):
        carrier: dict[str, str] = {}
        if traceparent:
            carrier[TRACEPARENT] = traceparent.decode("latin-1")
            if tracestate:
                carrier[TRACESTATE] = tracestate.decode("latin-1")
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        self.span = TRACING.tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        )
        self.token = otel_context.attach(trace.set_span_in_context(self.span, parent))
        self.trace_id = format(self.span.get_span_context().trace_id, "032x")

    def end(self, method: str, route: str, status: int, request_id: str) -> None:
        span = self.span
        attributes: dict[str, str | int] = {
            "http.response.status_code": status,
            "nexus.request_id": request_id,
        }
        if route != "<unmatched>":
            span.update_name(f"{method} {route}")
            attributes["http.route"] = route
        span.set_attributes(attributes)  # one call: the SDK locks per call
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        otel_context.detach(self.token)


@contextmanager
def span(
    name: str, *, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None
) -> Iterator[Span]:
    """A child of the current span (a no-op span when tracing is off); errors are recorded."""
    with TRACING.tracer.start_as_current_span(name, kind=kind, attributes=attributes) as current:
        yield current


def start_span(name: str, attributes: Mapping[str, Any] | None = None) -> Span | None:
    """A child of the current span that the caller ends (e.g. across a streamed body);
    ``None`` when tracing is off, so the caller does no span work at all."""
    if not TRACING.enabled:
        return None
    return TRACING.tracer.start_span(name, attributes=attributes)


def current_span() -> Span:
    """The current span (a non-recording one when tracing is off or outside a request)."""
    return trace.get_current_span()


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add the current span's ``traceparent``/``tracestate`` to outgoing headers (when on)."""
    if TRACING.enabled:
        _PROPAGATOR.inject(headers)
    return headers


def outgoing_headers() -> dict[str, str]:
    """``traceparent``/``tracestate`` for an outgoing call, empty when tracing is off."""
    return dict(inject({}))
