"""With tracing on, a generation is a span under the request's: backend, size, generation time."""

from __future__ import annotations

from opentelemetry.trace import SpanKind

from app.main import build_app
from nexus_testing.tracing import capture_spans
from tests.conftest import ClientFactory, SettingsFactory


async def test_a_generation_is_a_child_span_with_its_backend_and_time(
    make_settings: SettingsFactory, open_client: ClientFactory
) -> None:
    with capture_spans() as spans:
        async with open_client(build_app(make_settings())) as client:
            body = {"prompt": "a cat", "size": "256x256", "n": 2, "response_format": "b64_json"}
            resp = await client.post("/v1/images/generations", json=body)
            assert resp.status_code == 200, resp.text
        generation = spans.one("images.generate")
        server = spans.one("POST /v1/images/generations")
    assert server.kind is SpanKind.SERVER
    assert generation.parent is not None
    assert generation.parent.span_id == server.context.span_id
    attrs = dict(generation.attributes or {})
    assert attrs["nexus.images.backend"] == "stub"
    assert attrs["nexus.images.n"] == 2
    assert attrs["nexus.images.size"] == "256x256"
    generation_s = attrs["nexus.images.generation_s"]
    assert isinstance(generation_s, float)
    assert generation_s >= 0
