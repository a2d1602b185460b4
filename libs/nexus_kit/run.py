"""``python -m app.main``: run a service with uvicorn on its own ``SERVICE_PORT``."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from .settings import ServiceSettings


def serve(app: FastAPI, settings: ServiceSettings, host: str = "0.0.0.0") -> None:
    uvicorn.run(
        app,
        host=host,
        port=settings.service_port,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 1,
        log_config=None,
    )
