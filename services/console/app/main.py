"""Console service: the operator UI, served through the gateway at ``/console``.

Run from this directory: ``uvicorn app.main:app --port 8830`` or ``python -m app.main``.
The browser loads ``/console`` from the gateway (which routes it here from the metadata, with
no gateway configuration) and then talks only to the gateway's API with the signed-in user's
token.
"""

from __future__ import annotations

from fastapi import FastAPI

from nexus_kit import Capabilities, create_app, load_settings
from nexus_kit.run import serve

from .routes import router
from .settings import ConsoleSettings


def build_app(settings: ConsoleSettings | None = None) -> FastAPI:
    settings = settings or load_settings(ConsoleSettings)
    return create_app(
        settings,
        description="Operator console: a browser UI for the registry, keys, usage and models.",
        capabilities=Capabilities(domains=["console"], modalities=["text"]),
        routers=[router],
    )


app = build_app()

if __name__ == "__main__":
    serve(app, app.state.kit.settings)
