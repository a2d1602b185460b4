"""The app factory: every Nexus service is ``create_app(settings, routers=..., checks=...)``.

It gives a service ``/health``, ``/readyz``, ``/v1/metadata`` and ``/metrics``, request ids and
the access log, OpenAI-shaped errors, etcd registration and graceful drain. A service adds
only its routers, its checks and (optionally) a lifespan for its own resources.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from .drain import Drainer
from .handlers import install_error_handlers
from .health import Check, CheckResult
from .logging import configure_logging
from .metadata import Capabilities, Endpoint, ModelInfo, Resources, ServiceInfo, ServiceMetadata
from .metrics import HttpMetrics
from .middleware import SERVER_SEND, InFlight, RequestContextMiddleware
from .registration import Registrar
from .routes import kit_router
from .settings import ServiceSettings
from .tracing import TRACING

ServiceLifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
ModelsProvider = Sequence[ModelInfo] | Callable[[], Sequence[ModelInfo]]
OptionsProvider = Mapping[str, Any] | Callable[[], Mapping[str, Any]]

NEXUS_OPENAPI_KEY = "x-nexus"


def endpoint_flags(*, streaming: bool = False, public: bool = False) -> dict[str, Any]:
    """``openapi_extra`` for a route: how the gateway should treat it."""
    return {NEXUS_OPENAPI_KEY: {"streaming": streaming, "public": public}}


class NexusApp(FastAPI):
    """FastAPI, plus the server's own ``send`` kept in the scope at ``SERVER_SEND``.

    Every layer between the server and a route (Starlette's error layer, the kit's request
    context, a service's own middleware) wraps ``send`` to see ``http.response.start``, and
    none of them touches a body message. A route that relays many body chunks (the gateway's
    SSE streams: ~10,000 events/s on one worker) sends them through ``scope[SERVER_SEND]``
    once the start went through the whole chain, instead of paying every wrapper per chunk
    (issue 14: ~14% of the CPU of a relayed event). A middleware that rewrites bodies would be
    bypassed by such a route, so Nexus services add none."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope[SERVER_SEND] = send
        try:
            await super().__call__(scope, receive, send)
        finally:
            # The server's send is bound to its request object, which holds this scope: left
            # here, the pair is a reference cycle, and the request's objects wait for the
            # cyclic collector instead of going when it ends (issue 14: its passes are what
            # delays the requests in flight).
            del scope[SERVER_SEND]


@dataclass
class KitState:
    """Everything the kit keeps for one app, at ``app.state.kit``."""

    settings: ServiceSettings
    metrics: HttpMetrics
    registrar: Registrar
    in_flight: InFlight
    drainer: Drainer
    checks: list[Check]
    describe: Callable[[], ServiceMetadata]
    extra: dict[str, Any] = field(default_factory=dict)


def endpoints_of(routers: Sequence[APIRouter]) -> list[Endpoint]:
    """The metadata endpoints, read off the service's own routes."""
    found: list[Endpoint] = []
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            flags = (route.openapi_extra or {}).get(NEXUS_OPENAPI_KEY, {})
            for method in sorted((route.methods or set()) - {"HEAD", "OPTIONS"}):
                found.append(
                    Endpoint(
                        path=route.path,
                        method=method,  # type: ignore[arg-type]
                        operation_id=route.operation_id or route.name,
                        streaming=bool(flags.get("streaming", False)),
                        public=bool(flags.get("public", False)),
                        summary=route.summary,
                    )
                )
    return found


def create_app(
    settings: ServiceSettings,
    *,
    description: str = "",
    capabilities: Capabilities | None = None,
    routers: Sequence[APIRouter] = (),
    checks: Sequence[Check] = (),
    models: ModelsProvider = (),
    options: OptionsProvider | None = None,
    resources: Resources | None = None,
    lifespan: ServiceLifespan | None = None,
) -> FastAPI:
    """Build a service app. Does no I/O: connections open in the lifespan."""
    metrics = HttpMetrics()
    registrar = Registrar(settings)
    in_flight = InFlight()
    drainer = Drainer(registrar, in_flight, settings.shutdown_grace_s, settings.prestop_delay_s)
    endpoints = endpoints_of(routers)
    caps = capabilities or Capabilities(streaming=any(e.streaming for e in endpoints))

    def describe() -> ServiceMetadata:
        return ServiceMetadata(
            service=ServiceInfo(
                name=settings.service_name,
                version=settings.service_version,
                description=description,
                instance_id=settings.instance_id,
            ),
            capabilities=caps,
            endpoints=endpoints,
            models=list(models() if callable(models) else models),
            options=dict(options() if callable(options) else (options or {})),
            resources=resources,
        )

    async def registry_probe() -> CheckResult:
        return await registrar.check()

    all_checks = [*checks, Check("registry", registry_probe, critical=False)]

    @asynccontextmanager
    async def kit_lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.service_name)
        drainer.install()
        TRACING.start(settings)  # on only when OTEL_EXPORTER_OTLP_ENDPOINT is set
        async with AsyncExitStack() as stack:
            stack.push_async_callback(TRACING.astop)
            if lifespan is not None:
                await stack.enter_async_context(lifespan(app))
            registrar.start()
            try:
                yield
            finally:
                await registrar.stop()
                drainer.uninstall()

    app = NexusApp(
        title=f"nexus-{settings.service_name}",
        version=settings.service_version,
        description=description,
        lifespan=kit_lifespan,
        # A body sent without any Content-Type is parsed as JSON (clients mean JSON here).
        strict_content_type=False,
        # The kit traces requests itself (tracing.py, one attribute check when off). FastAPI's
        # native telemetry would add a second server span, and even with nothing configured it
        # looks up three global OTel providers on every request (issue 14: ~1% of a core).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.kit = KitState(settings, metrics, registrar, in_flight, drainer, all_checks, describe)
    install_error_handlers(app)
    app.include_router(kit_router)
    for router in routers:
        app.include_router(router)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, in_flight=in_flight)
    return app
