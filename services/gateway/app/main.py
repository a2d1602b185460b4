"""Gateway: one OpenAI-compatible front door, routed from etcd + ``/v1/metadata`` discovery.

Run from this directory: ``uvicorn app.main:app --port 8800`` or ``python -m app.main``.

Request path (outside in): CORS (when ``NEXUS_CORS_ORIGINS`` is set; answers preflight) ->
the kit's request context (request id, access log, HTTP metrics) -> the ``Guard`` slot
(``auth.AuthGuard``: bearer, admin paths, rate limits; none when ``NEXUS_AUTH_ENABLED=false``)
-> the gateway's own routes (kit endpoints, ``/v1/models``, ``/v1/routes``, ``/v1/services``)
-> anything else: ``proxy.Proxy``.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from nexus_kit import Capabilities, Check, ModelInfo, create_app
from nexus_kit.run import serve

from .alias_routes import router as alias_router
from .dispatch import ProxyFirst
from .docs_routes import install_docs
from .etcd import AetcdSource, EtcdSource
from .guard import Guard, GuardMiddleware
from .prefixless import V1Prefix
from .routes import ready_models, router
from .settings import GatewaySettings, load_gateway_settings
from .state import GatewayState

EXPOSED_HEADERS = ["x-request-id", "retry-after", "x-ratelimit-limit-requests",
                   "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
                   "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
                   "x-ratelimit-reset-tokens"]  # fmt: skip


def build_app(
    settings: GatewaySettings | None = None,
    *,
    guard: Guard | None = None,
    source_factory: Callable[[str], EtcdSource] = AetcdSource,
) -> FastAPI:
    settings = settings or load_gateway_settings()
    state = GatewayState(settings, source_factory)
    if guard is None and settings.nexus_auth_enabled:
        guard = state.auth_guard()

    def models() -> list[ModelInfo]:
        return [model for model, _ in ready_models(state)]

    app = create_app(
        settings,
        description="OpenAI-compatible gateway: routes to every service discovered in etcd.",
        capabilities=Capabilities(domains=["gateway"], modalities=["text"], streaming=True),
        routers=[router, alias_router],
        checks=[
            Check("discovery", state.check_discovery),
            Check("upstreams", state.check_upstreams, critical=False),
            Check("etcd", state.check_etcd, critical=False),  # a frozen etcd shows here
        ],
        models=models,
        lifespan=state.lifespan,
    )
    app.state.gateway = state
    state.bind_metrics(app.state.kit.metrics.registry)
    install_docs(app, state)  # GET /openapi.json of everything routed, GET /docs (docs_routes.py)
    _install_proxy_and_edges(app, state, settings, guard)
    return app


def _install_proxy_and_edges(
    app: FastAPI, state: GatewayState, settings: GatewaySettings, guard: Guard | None
) -> None:
    # Unmatched requests go to the proxy as plain ASGI: no FastAPI request parsing per call,
    # and no trailing-slash redirect guesses (upstream paths are passed as they are).
    app.router.default = state.proxy
    app.router.redirect_slashes = False
    # Before auth and routing: /chat/completions is /v1/chat/completions (prefixless.py).
    app.user_middleware.append(Middleware(V1Prefix))
    if guard is not None:
        # Innermost user middleware: after the kit's request context, before any route.
        guarded = Middleware(GuardMiddleware, guard=guard, is_public=state.is_public)
        app.user_middleware.append(guarded)
    # Innermost of all: proxied paths skip Starlette's exception layer and router (dispatch.py).
    app.user_middleware.append(Middleware(ProxyFirst, proxy=state.proxy, routes=app.routes))
    if settings.cors_origin_list:
        # Outermost: preflight is answered before the guard could ask for a bearer.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=EXPOSED_HEADERS,
        )


app = build_app()

if __name__ == "__main__":
    serve(app, app.state.kit.settings)
