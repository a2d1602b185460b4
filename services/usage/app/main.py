"""Usage service: token usage records from the gateway, OpenAI's Usage API, per-key summaries.

Run from this directory: ``uvicorn app.main:app --port 8820`` or ``python -m app.main``.
The gateway finds it by the ``usage.records.ingest`` operation in its metadata (no config).
"""

from __future__ import annotations

from fastapi import FastAPI

from nexus_kit import Capabilities, Check, create_app
from nexus_kit.run import serve

from .routes import router
from .settings import UsageSettings, load_usage_settings
from .state import Runtime


def build_app(settings: UsageSettings | None = None) -> FastAPI:
    settings = settings or load_usage_settings()
    runtime = Runtime(settings)
    return create_app(
        settings,
        description="Token usage per key and model; OpenAI's Usage API; ingest for gateways.",
        capabilities=Capabilities(domains=["usage"]),
        routers=[router],
        checks=[Check("database", runtime.check_database, critical=True)],
        lifespan=runtime.lifespan,
    )


app = build_app()

if __name__ == "__main__":
    serve(app, app.state.kit.settings)
