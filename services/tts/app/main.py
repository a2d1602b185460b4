"""TTS service: OpenAI ``/v1/audio/speech`` on Pocket TTS, espeak-ng or a stub tone.

Run from this directory: ``uvicorn app.main:app --port 9940`` or ``python -m app.main``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from nexus_kit import Capabilities, Check, create_app, load_settings
from nexus_kit.run import serve

from .backends import TTSBackend
from .encoding import Encoders
from .engine import Engine, build_engine
from .metrics import TTSMetrics
from .routes import router
from .settings import TTSSettings
from .state import Catalog, TTSState


def build_app(settings: TTSSettings | None = None, backend: TTSBackend | None = None) -> FastAPI:
    """The app; ``backend`` replaces the ``TTS_BACKEND`` choice (tests hand in their own)."""
    settings = settings or load_settings(TTSSettings)
    engine = Engine([backend], fallback=False) if backend else build_engine(settings)
    encoders = Encoders()
    catalog = Catalog(settings, engine, encoders)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start()  # loads in the background; readyz says 503 until a backend is ready
        try:
            yield
        finally:
            await engine.aclose()

    app = create_app(
        settings,
        description="Text to speech (OpenAI /v1/audio/speech), streamed as it is spoken.",
        capabilities=Capabilities(domains=["audio"], modalities=["audio"], streaming=True),
        routers=[router],
        checks=[
            Check("backend", engine.check),
            Check("formats", catalog.formats_check, critical=False),
        ],
        models=catalog.models,
        options=catalog.options,
        lifespan=lifespan,
    )
    metrics = TTSMetrics(app.state.kit.metrics.registry)
    app.state.tts = TTSState(engine, encoders, catalog, metrics)
    return app


app = build_app()

if __name__ == "__main__":
    serve(app, app.state.kit.settings)
