"""With tracing off a request does no OpenTelemetry work: no global provider lookups (issue 14).

FastAPI's native telemetry (0.16x) asks ``opentelemetry`` for its global tracer, meter and
logger providers on every request to decide whether it is on; the kit traces by itself
(``nexus_kit.tracing``) and turns FastAPI's off, so the only per-request check is the kit's
``TRACING.enabled``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from kit_app import demo_router
from opentelemetry import metrics, trace
from opentelemetry._logs import _internal as logs_internal

from nexus_kit import ServiceSettings, create_app
from nexus_kit.tracing import TRACING


def counting(calls: Counter[str], name: str, real: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[name] += 1
        return real(*args, **kwargs)

    return wrapper


async def test_a_request_with_tracing_off_looks_up_no_otel_provider(
    settings: ServiceSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: Counter[str] = Counter()
    for module, name in ((trace, "get_tracer_provider"), (metrics, "get_meter_provider"),
                         (logs_internal, "get_logger_provider")):  # fmt: skip
        monkeypatch.setattr(module, name, counting(calls, name, getattr(module, name)))
    app = create_app(settings, routers=[demo_router()])
    async with LifespanManager(app) as manager:
        assert not TRACING.enabled
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kit") as client:
            calls.clear()  # startup may look (FastAPI's lifespan); requests must not
            for _ in range(3):
                assert (await client.get("/health")).status_code == 200
                assert (await client.get("/v1/nothing-here")).status_code == 404
    assert calls == Counter(), calls
