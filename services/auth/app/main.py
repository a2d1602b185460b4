"""Auth service: users, API keys, JWT access + refresh tokens, introspection for the gateway.

Run from this directory: ``uvicorn app.main:app --port 8810`` or ``python -m app.main``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from nexus_kit import Capabilities, Check, create_app
from nexus_kit.run import serve

from .routes import router
from .settings import AuthSettings, load_auth_settings
from .state import Runtime


def build_app(settings: AuthSettings | None = None) -> FastAPI:
    settings = settings or load_auth_settings()
    runtime = Runtime(settings)

    def options() -> dict[str, Any]:
        # What a gateway needs to verify access tokens locally.
        return {
            "jwks_path": "/.well-known/jwks.json",
            "introspect_path": "/v1/auth/introspect",
            "issuer": settings.jwt_issuer,
            "audience": settings.jwt_audience,
        }

    return create_app(
        settings,
        description="Users, API keys and JWT access tokens; token introspection for the gateway.",
        capabilities=Capabilities(domains=["auth"]),
        routers=[router],
        checks=[Check("database", runtime.check_database, critical=True)],
        options=options,
        lifespan=runtime.lifespan,
    )


app = build_app()

if __name__ == "__main__":
    serve(app, app.state.kit.settings)
