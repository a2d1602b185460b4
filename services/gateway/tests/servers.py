"""Real servers on loopback for the integration tests: a fake Ollama and the gateway."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from app.main import build_app
from app.state import GatewayState
from nexus_testing import UvicornThread, wait_for_http
from tests.support import OllamaScript, fake_ollama, settings


@contextmanager
def ollama_and_gateway(
    script: OllamaScript, **overrides: Any
) -> Iterator[tuple[UvicornThread, UvicornThread, GatewayState]]:
    """A fake Ollama and a gateway routing to it, both real uvicorn servers."""
    with UvicornThread(fake_ollama(script)) as upstream:
        app = build_app(settings(ollama_base_url=upstream.url, **overrides))
        with UvicornThread(app) as gw:
            wait_for_http(f"{gw.url}/readyz", timeout_s=10)
            yield upstream, gw, app.state.gateway
