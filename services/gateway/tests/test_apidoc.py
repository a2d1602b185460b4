"""``GET /openapi.json`` (one OpenAPI 3.1 document of what is routed) and ``GET /docs``, in process.

The service behind the gateway is a real HTTP server on loopback (``tests.upstream``) serving
its own document; the real-process tier (a template copy, etcd, schemathesis) is in
``test_apidoc_integration.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from app.apidoc import OPENAI_OPERATIONS, extract_openai_operations
from app.guard import Access, Decision
from app.state import GatewayState
from nexus_kit import AuthenticationError
from tests.support import gateway, metadata, settings
from tests.upstream import FakeUpstream, Reply, answer

SHARED_SPEC = Path(__file__).resolve().parents[4] / "shared" / "openai-openapi.yaml"
# A service's own document as FastAPI writes it (a request model, FastAPI's 422).
ITEM = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
SERVICE_DOC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "nexus-echo", "version": "1.0.0"},
    "paths": {
        "/v1/echo": {
            "post": {
                "operationId": "echo.0",
                "summary": "Echo",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Item"}}}},
                "responses": {
                    "200": {"description": "OK", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Item"}}}},
                    "422": {"description": "Validation Error", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}},
                },
            }
        },
        "/v1/items/{id}": {"get": {"operationId": "echo.1", "parameters": [
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "OK"}}}},
        "/health": {"get": {"operationId": "health", "responses": {"200": {"description": "OK"}}}},
    },
    "components": {"schemas": {
        "Item": ITEM,
        "HTTPValidationError": {"type": "object"},
        # Same name as a gateway component with another meaning: must be renamed, not merged.
        "ModelList": {"type": "string", "description": "echo's own idea of a model list"},
    }},
}  # fmt: skip


class BearerGuard:
    """A guard that wants ``Bearer good`` on everything not public."""

    async def __call__(self, access: Access) -> Decision:
        if access.public or (b"authorization", b"Bearer good") in access.headers:
            return Decision()
        raise AuthenticationError("A bearer is needed.")


def echo_upstream(doc: Reply | None = None) -> FakeUpstream:
    endpoints = [("POST", "/v1/echo"), ("GET", "/v1/items/{id}"), ("POST", "/v1/undocumented")]
    fake = FakeUpstream(metadata("echo", endpoints, public=frozenset({"/v1/items/{id}"})))
    fake.route("GET", "/openapi.json", answer(doc or Reply.json(SERVICE_DOC)))
    return fake


def ollama_upstream() -> FakeUpstream:
    fake = FakeUpstream()
    fake.route("GET", "/api/tags", answer(Reply.json({"models": [{"name": "llama3:latest"}]})))
    fake.route("GET", "/api/version", answer(Reply.json({"version": "0.5.0"})))
    return fake


@asynccontextmanager
async def docs_gateway(
    echo: FakeUpstream, ollama: FakeUpstream | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, GatewayState]]:
    config = settings(static_backends={"echo": echo.url},
                      ollama_base_url=ollama.url if ollama else "")  # fmt: skip
    async with gateway(config, guard=BearerGuard()) as (client, state):
        yield client, state


async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    resp = await client.get("/openapi.json")  # public: no bearer
    assert resp.status_code == 200, resp.text
    doc: dict[str, Any] = resp.json()
    return doc


async def test_one_valid_31_document_of_the_gateway_its_services_and_ollama() -> None:
    async with echo_upstream() as echo, ollama_upstream() as ollama, docs_gateway(
        echo, ollama
    ) as (client, _):
        doc = await document(client)
    validate(doc)  # OpenAPI 3.1 (openapi-spec-validator picks the version from the document)
    assert doc["openapi"] == "3.1.0"
    paths = doc["paths"]
    # The service's operation, at the gateway's path and at its /services/<name>/ alias.
    for path in ("/v1/echo", "/services/echo/v1/echo"):
        op = paths[path]["post"]
        body_ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        # OpenAI's document has an ``Item`` too: the service's is kept under its own name.
        assert body_ref in ("#/components/schemas/Item", "#/components/schemas/echo.Item")
        assert doc["components"]["schemas"][body_ref.rsplit("/", 1)[1]] == ITEM
        assert op["security"] == [{"bearerAuth": []}]
        assert "422" not in op["responses"]
        assert op["responses"]["default"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/NexusError"
        }
    assert paths["/v1/echo"]["post"]["operationId"] == "echo.0"
    assert paths["/services/echo/v1/echo"]["post"]["operationId"] != "echo.0"  # unique
    # Public endpoints carry no security; the service's unrouted /health is not in it.
    assert paths["/v1/items/{id}"]["get"]["security"] == []
    assert "/health" in paths  # the gateway's own
    assert paths["/health"]["get"]["security"] == []
    # An endpoint the service's document lacks still appears, as a bare operation.
    assert "post" in paths["/v1/undocumented"]
    # Ollama: OpenAI's own operations, with what they reference.
    chat = paths["/v1/chat/completions"]["post"]
    ref = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/CreateChatCompletionRequest"
    assert "CreateChatCompletionRequest" in doc["components"]["schemas"]
    assert "/v1/embeddings" in paths
    # The gateway's own routes win over the services'.
    assert paths["/v1/models"]["get"]["tags"] == ["gateway"]
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "A Nexus API key (nx-...) or a JWT."
    }  # fmt: skip


async def test_clashing_component_names_are_prefixed_not_merged() -> None:
    async with echo_upstream() as echo, docs_gateway(echo) as (client, _):
        doc = await document(client)
    schemas = doc["components"]["schemas"]
    if "ModelList" in schemas and schemas["ModelList"] != SERVICE_DOC["components"]["schemas"][
        "ModelList"
    ]:
        assert schemas["echo.ModelList"]["description"] == "echo's own idea of a model list"
    else:
        assert schemas["ModelList"]["description"] == "echo's own idea of a model list"


async def test_cached_between_table_changes() -> None:
    async with echo_upstream() as echo, docs_gateway(echo) as (client, state):
        first = (await client.get("/openapi.json")).content
        second = (await client.get("/openapi.json")).content
        assert first == second
        assert len(echo.calls("GET", "/openapi.json")) == 1
        state.apply(state.table.snapshot)  # a new table (same instances): rebuilt, not refetched
        assert (await client.get("/openapi.json")).content == first
        assert len(echo.calls("GET", "/openapi.json")) == 1


async def test_a_service_without_a_usable_document_gets_bare_operations() -> None:
    broken = Reply(500, b"oops", [("content-type", "text/plain")])
    async with echo_upstream(broken) as echo, docs_gateway(echo) as (client, _):
        doc = await document(client)
    validate(doc)
    op = doc["paths"]["/v1/echo"]["post"]
    assert op["requestBody"] == {"content": {"application/json": {"schema": {}}}}
    assert op["operationId"] == "echo.0"


async def test_docs_are_public_and_self_contained() -> None:
    async with echo_upstream() as echo, docs_gateway(echo) as (client, _):
        page = await client.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "https://" not in page.text  # nothing from a CDN
        for asset in ("/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/init.js"):
            assert asset in page.text or asset == "/docs/init.js"
            resp = await client.get(asset)
            assert resp.status_code == 200, asset
        assert "SwaggerUIBundle" in (await client.get("/docs/init.js")).text
        missing = await client.get("/docs/nope.js", headers={"authorization": "Bearer good"})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        # Try it out: the API key goes as the bearer, and only then does a request pass.
        assert (await client.post("/v1/echo", json={"name": "a"})).status_code == 401


def test_the_vendored_openai_operations_match_the_source() -> None:
    if not SHARED_SPEC.exists():
        pytest.skip("shared/openai-openapi.yaml is not beside this clone")
    import yaml

    with SHARED_SPEC.open("rb") as fh:
        spec = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    fresh = json.loads(json.dumps(extract_openai_operations(spec)))
    assert fresh == json.loads(OPENAI_OPERATIONS.read_text()), (
        "run: .venv/bin/python scripts/vendor_openai_operations.py"
    )
