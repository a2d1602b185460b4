"""Everything the gateway holds at run time, in one typed object at ``app.state.gateway``.

Creating it does no I/O. The lifespan opens the HTTP clients (one pooled client for proxied
traffic, a small one for the control plane: metadata, probes), starts discovery, the prober
and the metrics server, and closes them all afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import httpx
from fastapi import FastAPI
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from nexus_kit import CheckResult, ServiceMetadata, get_logger
from nexus_kit.tracing import span

from . import departed, oslimits
from .aliases import Aliases
from .auth import Authenticator, AuthGuard
from .client import make_client
from .discovery import Discovery, Instance, Snapshot, fetch_metadata
from .etcd import AetcdSource, EtcdSource
from .events import EventHub
from .metrics import GatewayMetrics, LiveView, MetricsServer, UpstreamGauge
from .proxy import Proxy
from .ratelimit import RateLimiter
from .routing import EMPTY_TABLE, Balancer, RoutingTable, build_routing_table
from .settings import GatewaySettings
from .upstreams import Prober, Upstreams, grace_probe
from .usagesink import UsageRuntime

log = get_logger("nexus.gateway")
# Middle and old generations with a large young one (the setting ``gc_young_threshold``): a
# middle pass every 20 young ones, a full pass every 10 middle ones (CPython: 10, 10).
GC_OLDER_THRESHOLDS = (20, 10)


class GatewayState:
    client: aiohttp.ClientSession  # proxied traffic (ADR 0005); opened in the lifespan
    control: httpx.AsyncClient  # metadata fetches and probes

    def __init__(
        self,
        settings: GatewaySettings,
        source_factory: Callable[[str], EtcdSource] = AetcdSource,
    ) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics(CollectorRegistry())
        self.upstreams = Upstreams(settings.eject_after_failures, settings.eject_s)
        self.balancer = Balancer(self.upstreams)
        self.table: RoutingTable = EMPTY_TABLE
        self.departed: departed.Departed = {}
        self.discovery = Discovery(
            settings,
            source_factory=source_factory,
            fetch=self._fetch,
            on_change=self.apply,
            on_event=lambda name: self.metrics.event(name),
            probe=lambda instance: grace_probe(self.upstreams, self.control, instance),
        )
        self.aliases = Aliases(settings, source_factory)  # model aliases from etcd (aliases.py)
        # usage accounting: metering, durable delivery, token quotas (usagesink.py)
        self.usage = UsageRuntime(settings, lambda: self.table, lambda: self.control)
        self.proxy = Proxy(self)
        self.events = EventHub()  # the admin live feed (events.py)
        self.limiter: RateLimiter | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def bind_metrics(self, registry: CollectorRegistry) -> None:
        """Share the kit's registry, so 8801 and the kit's ``/metrics`` show everything."""
        self.metrics = GatewayMetrics(registry)
        self.metrics.add_live(self.live_view)
        self.usage.bind_metrics(registry)

    # the atomic swap

    def apply(self, snapshot: Snapshot) -> None:
        """Discovery published a snapshot: build its table and swap it in (one assignment)."""
        table = build_routing_table(snapshot)
        now, keep_s = time.monotonic(), self.settings.route_gone_s
        self.departed = departed.remember(self.table, table, self.departed, now, keep_s)
        if self.departed:  # paths whose last instance left answer 503 for a while (departed.py)
            table = build_routing_table(snapshot, self.departed)
        self.upstreams.sync(snapshot)
        self.table = table
        self.events.notify()

    def is_public(self, method: str, path: str) -> bool:
        return self.table.is_public(method, path)

    # auth

    def auth_guard(self) -> AuthGuard:
        s = self.settings
        token = s.nexus_internal_token.get_secret_value() if s.nexus_internal_token else None
        authenticator = Authenticator(
            lambda: self.control, self.auth_base_url, token,
            cache_ttl_s=s.auth_cache_ttl_s, negative_ttl_s=s.auth_negative_cache_ttl_s,
            jwt_issuer=s.jwt_issuer, jwt_audience=s.jwt_audience, timeout_s=s.auth_timeout_s,
            stale_if_error_s=s.auth_stale_if_error_s, on_stale=self._stale_admission,
        )  # fmt: skip
        self.limiter = RateLimiter(s.rate_limit_storage_url, s.nexus_default_rate_limit_rpm)
        tokens = self.usage.token_limiter(self.limiter.storage)  # same storage as request limits
        return AuthGuard(authenticator, self.limiter, tokens=tokens)

    def _stale_admission(self) -> None:
        self.metrics.auth_stale.inc()  # the metrics object is rebound after the guard is built

    def auth_base_url(self) -> str | None:
        """A ready instance of the auth service, from the current table (no etcd call)."""
        name = self.settings.auth_service_name
        now = time.monotonic()
        fallback = None
        for instance in self.table.snapshot.instances:
            if instance.service != name or instance.draining:
                continue
            state = self.upstreams.states.get(instance.key)
            if state is None or state.available(now):
                return instance.base_url
            fallback = instance.base_url
        return fallback

    # lifespan

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        s = self.settings
        self.client = make_client(
            max_connections=s.upstream_max_connections, keepalive_s=s.upstream_keepalive_s
        )
        self.control = httpx.AsyncClient(
            timeout=s.discovery_metadata_timeout_s, trust_env=False, follow_redirects=True
        )
        metrics_server = MetricsServer(
            self.metrics.registry, s.gateway_metrics_host, s.gateway_metrics_port,
            s.gateway_metrics_socket,
        )  # fmt: skip
        if not s.gateway_metrics_socket:  # a lone process; a supervisor checked for its workers
            oslimits.warn_at_start(s)
        gc_before = gc.get_threshold()
        try:
            if s.gateway_metrics_port or s.gateway_metrics_socket:
                await metrics_server.start()
            self.discovery.start()
            self.aliases.start()
            self._tasks.append(self.usage.start())
            if s.health_probe_interval_s > 0:
                prober = Prober(
                    self.upstreams, self.control, s.health_probe_interval_s,
                    lambda: self.table.snapshot, self._recovered,
                )  # fmt: skip
                self._tasks.append(asyncio.create_task(prober.run(), name="gateway-prober"))
            if s.gc_freeze_after_startup:
                gc.collect()
                gc.freeze()  # see the setting: startup objects leave the collector's full passes
            if s.gc_young_threshold:
                gc.set_threshold(s.gc_young_threshold, *GC_OLDER_THRESHOLDS)
            yield
        finally:
            gc.set_threshold(*gc_before)  # several apps can share a process (tests)
            await self._close(metrics_server)

    async def _close(self, metrics_server: MetricsServer) -> None:
        self.events.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.discovery.stop()
        await self.aliases.stop()
        await metrics_server.stop()
        await self.usage.close()  # the last records: delivered or spooled to disk
        self.proxy.read_gaps.close()
        await self.client.close()
        await self.control.aclose()
        if self.limiter is not None:
            await self.limiter.close()

    async def _fetch(self, instance: Instance) -> ServiceMetadata:
        attributes = {"nexus.service": instance.service, "nexus.instance": instance.instance_id,
                      "nexus.upstream.kind": instance.kind}  # fmt: skip
        with span("gateway.discovery.fetch_metadata", kind=SpanKind.CLIENT, attributes=attributes):
            return await fetch_metadata(self.control, instance)

    def _recovered(self, instance: Instance) -> None:
        if instance.kind != "nexus":
            self.discovery.refresh(instance.key)  # models may have changed while it was down

    # readiness and live metrics

    async def check_discovery(self) -> CheckResult:
        d = self.discovery
        if d.synced.is_set():
            detail = f"revision {d.revision}, {len(self.table.snapshot.instances)} instances"
            return CheckResult(True, detail + (f"; etcd: {d.etcd_error}" if d.etcd_error else ""))
        if not d.etcd_synced:
            return CheckResult(
                False, f"waiting for the first etcd read ({d.etcd_error or 'connecting'})"
            )
        return CheckResult(False, "waiting for the first metadata fetches")

    async def check_etcd(self) -> CheckResult:
        """Whether etcd answers now (not critical: the last table keeps serving without it)."""
        d = self.discovery
        if not self.settings.etcd_endpoint_list:
            return CheckResult(True, "no etcd configured")
        if d.etcd_error is None:
            return CheckResult(True, f"revision {d.revision}")
        since = f"; last answer {time.time() - d.etcd_last_ok:.0f} s ago" if d.etcd_last_ok else ""
        return CheckResult(False, f"{d.etcd_error}{since}; serving the last table")

    async def check_upstreams(self) -> CheckResult:
        """Each upstream's state; informational (not critical: the gateway serves the rest)."""
        instances = self.table.snapshot.instances
        states = [(i, self.upstreams.describe(i)) for i in instances]
        detail = ", ".join(
            f"{i.service}/{i.instance_id}={state}" + (f" ({i.error})" if i.error else "")
            for i, state in states
        )
        return CheckResult(all(s == "ready" for _, s in states), detail or "no upstreams")

    def live_view(self) -> LiveView:
        gauges = []
        for instance in self.table.snapshot.instances:
            state = self.upstreams.states.get(instance.key)
            ready = self.upstreams.describe(instance) == "ready"
            in_flight = state.in_flight if state else 0
            gauges.append(UpstreamGauge(instance.service, instance.instance_id, ready, in_flight))
        return LiveView(self.proxy.in_flight, len(self.table.routes), gauges)
