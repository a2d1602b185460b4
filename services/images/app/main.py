"""Images service: OpenAI ``/v1/images/generations`` on a stub, diffusers or AUTOMATIC1111.

Run from this directory: ``uvicorn app.main:app --port 7860`` or ``python -m app.main``.
"""

from __future__ import annotations

from fastapi import FastAPI

from nexus_kit import Capabilities, Check, create_app, load_settings
from nexus_kit.run import serve

from .backends import ImageBackend, make_backend
from .metrics import ImagesMetrics
from .routes import router
from .settings import ImagesSettings
from .state import ImagesState, lifespan


def build_app(
    settings: ImagesSettings | None = None, *, backend: ImageBackend | None = None
) -> FastAPI:
    """``backend`` lets tests put a fake behind the real routes."""
    settings = settings or load_settings(ImagesSettings)
    backend = backend or make_backend(settings)
    metrics = ImagesMetrics()
    state = ImagesState.create(settings, backend, metrics)
    app = create_app(
        settings,
        description=f"Text to image, OpenAI-compatible ({backend.name} backend).",
        capabilities=Capabilities(domains=["images"], modalities=["text", "image"]),
        routers=[router],
        checks=[Check("backend", state.check)],
        models=state.models,
        options=state.options,
        lifespan=lifespan,
    )
    # Into the kit's per-app registry, so GET /metrics shows them beside the HTTP metrics.
    metrics.register(app.state.kit.metrics.registry)
    app.state.images = state
    return app


app = build_app()

if __name__ == "__main__":
    serve(app, app.state.kit.settings)
