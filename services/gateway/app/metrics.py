"""Gateway metrics, and the small server that exposes them on ``GATEWAY_METRICS_PORT`` (8801).

Counters and histograms are updated per request (children cached per label set, so the hot
path does one dict lookup each). Gauges that describe current state (in flight, routes,
upstream health) are computed when scraped by ``LiveCollector``, so keeping them costs
nothing per request and they never show instances that have left.

The server is a few lines of asyncio in the gateway's own event loop rather than
prometheus_client's thread: the collector then reads gateway state from the loop that
mutates it, and nothing installs signal handlers next to uvicorn's. One process serves one
metrics port; a port already taken (a second process, e.g. ``uvicorn --workers``) stops the
start with a message saying so, instead of a bare ``EADDRINUSE`` (README "Scaling"). Under
the worker supervisor each worker serves its registry on a unix socket instead, and the
supervisor serves the sum of all of them on the port (``aggregate.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from nexus_kit.metrics import LATENCY_BUCKETS


@dataclass(frozen=True, slots=True)
class UpstreamGauge:
    service: str
    instance: str
    healthy: bool
    in_flight: int


@dataclass(frozen=True, slots=True)
class LiveView:
    in_flight: int
    routes: int
    upstreams: list[UpstreamGauge]


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "nexus_gateway_requests_total",
            "Requests the gateway proxied or refused, by route template and status.",
            ["route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "nexus_gateway_request_duration_seconds",
            "Time from request start to the last byte sent to the client.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_latency = Histogram(
            "nexus_gateway_upstream_duration_seconds",
            "Time from sending upstream to its response headers, by upstream service.",
            ["upstream"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.discovery_events = Counter(
            "nexus_gateway_discovery_events_total",
            "Discovery events: put, delete, resync, compacted, reconnect, metadata_ok/_error.",
            ["event"],
            registry=registry,
        )
        self.auth_stale = Counter(
            "nexus_gateway_auth_stale_admissions_total",
            "API-key requests admitted from the stale-if-error window while auth was unreachable.",
            registry=registry,
        )
        self._requests: dict[tuple[str, int], Counter] = {}
        self._latency: dict[str, Histogram] = {}
        self._upstream: dict[str, Histogram] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        counter = self._requests.get((route, status))
        if counter is None:
            counter = self._requests[(route, status)] = self.requests.labels(route, str(status))
        counter.inc()
        histogram = self._latency.get(route)
        if histogram is None:
            histogram = self._latency[route] = self.latency.labels(route)
        histogram.observe(seconds)

    def observe_upstream(self, service: str, seconds: float) -> None:
        histogram = self._upstream.get(service)
        if histogram is None:
            histogram = self._upstream[service] = self.upstream_latency.labels(service)
        histogram.observe(seconds)

    def event(self, name: str) -> None:
        self.discovery_events.labels(name).inc()

    def add_live(self, view: Callable[[], LiveView]) -> None:
        self.registry.register(LiveCollector(view))


class LiveCollector(Collector):
    def __init__(self, view: Callable[[], LiveView]) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        view = self.view()
        yield GaugeMetricFamily(
            "nexus_gateway_requests_in_flight", "Requests being proxied now.", value=view.in_flight
        )
        yield GaugeMetricFamily(
            "nexus_gateway_routes", "Routes in the current table (aliases included).", view.routes
        )
        healthy = GaugeMetricFamily(
            "nexus_gateway_upstream_healthy",
            "1 when the instance may receive requests (probe passing, not ejected, not draining).",
            labels=["service", "instance"],
        )
        busy = GaugeMetricFamily(
            "nexus_gateway_upstream_in_flight",
            "Requests in flight to the instance.",
            labels=["service", "instance"],
        )
        for up in view.upstreams:
            healthy.add_metric([up.service, up.instance], 1.0 if up.healthy else 0.0)
            busy.add_metric([up.service, up.instance], up.in_flight)
        yield healthy
        yield busy


class MetricsServer:
    """``GET /metrics`` (any path, really) over HTTP/1.1 with ``Connection: close``."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, path: str = "") -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self.path = path  # a unix socket instead (a worker's, read by the supervisor: workers.py)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        if self.path:
            self._server = await asyncio.start_unix_server(self._serve, self.path)
            return
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as exc:
            # Typically a second gateway process on this host: uvicorn --workers is not how the
            # gateway scales (each worker would need its own metrics port); app.workers is.
            raise RuntimeError(
                f"GATEWAY_METRICS_PORT {self.port} on {self.host} is not free ({exc.strerror}). "
                "One gateway per metrics port: several processes on one port are "
                "GATEWAY_WORKERS (python -m app.workers), not uvicorn --workers; separate "
                "replicas on one host each need their own port."
            ) from exc

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def body(self) -> bytes:
        return generate_latest(self.registry)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            body = await self.body()
            head = (
                "HTTP/1.1 200 OK\r\n"
                f"Content-Type: {CONTENT_TYPE_LATEST}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
