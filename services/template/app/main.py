"""Template service: copy this directory to start a new Nexus service.

Run from this directory: ``uvicorn app.main:app --port 9000`` or ``python -m app.main``.
"""

from __future__ import annotations

from fastapi import FastAPI

from nexus_kit import Capabilities, create_app, load_settings
from nexus_kit.run import serve

from .routes import router
from .settings import TemplateSettings


def build_app(settings: TemplateSettings | None = None) -> FastAPI:
    settings = settings or load_settings(TemplateSettings)
    return create_app(
        settings,
        description="Example service: echoes a message back. Copy me.",
        capabilities=Capabilities(domains=["example"], modalities=["text"]),
        routers=[router],
    )


app = build_app()

if __name__ == "__main__":
    serve(app, app.state.kit.settings)
