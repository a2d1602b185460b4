"""The kit's endpoints, error shapes and request ids, in process."""

from __future__ import annotations

import logging

import httpx
import pytest
from asgi_lifespan import LifespanManager
from conftest import assert_openai_schema

from nexus_kit import Check, CheckResult, ServiceSettings, create_app


async def test_health_is_ok(client: httpx.AsyncClient) -> None:
    resp = await client.get("/health")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


async def test_readyz_reports_registry_as_non_critical(client: httpx.AsyncClient) -> None:
    resp = await client.get("/readyz")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ready"
    assert body["checks"]["registry"]["critical"] is False


@pytest.mark.parametrize(
    ("critical", "expected_status"), [(True, 503), (False, 200)]
)
async def test_failing_check_names_itself(
    settings: ServiceSettings, critical: bool, expected_status: int
) -> None:
    async def db_down() -> CheckResult:
        return CheckResult(False, "connection refused")

    async def raises() -> bool:
        raise ConnectionError("nope")

    checks = [Check("database", db_down, critical=critical), Check("cache", raises, critical=False)]
    app = create_app(settings, checks=checks)
    async with LifespanManager(app) as m, httpx.AsyncClient(
        transport=httpx.ASGITransport(app=m.app), base_url="http://kit"
    ) as client:
        resp = await client.get("/readyz")
    assert resp.status_code == expected_status
    checks_out = resp.json()["checks"]
    assert checks_out["database"] == {
        "status": "fail", "critical": critical, "detail": "connection refused"
    }
    assert checks_out["cache"]["detail"] == "ConnectionError: nope"


async def test_slow_check_times_out(settings: ServiceSettings) -> None:
    import asyncio

    async def slow() -> bool:
        await asyncio.sleep(5)
        return True

    app = create_app(settings, checks=[Check("slow", slow, timeout_s=0.05)])
    async with LifespanManager(app) as m, httpx.AsyncClient(
        transport=httpx.ASGITransport(app=m.app), base_url="http://kit"
    ) as client:
        resp = await client.get("/readyz")
    assert resp.status_code == 503
    assert "timed out" in resp.json()["checks"]["slow"]["detail"]


async def test_metadata_lists_routes_with_flags(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/metadata")).json()
    assert body["schema_version"] == "v1"
    assert body["service"]["name"] == "kit-test"
    assert body["service"]["instance_id"].startswith("kit-test-")
    by_op = {e["operation_id"]: e for e in body["endpoints"]}
    assert by_op["demo.get"] == {
        "path": "/v1/items/{item_id}", "method": "GET", "operation_id": "demo.get",
        "streaming": False, "public": True,
    }
    assert by_op["demo.stream"]["streaming"] is True
    assert body["capabilities"]["streaming"] is True
    assert "kit.health" not in by_op  # the kit's own endpoints are not advertised for routing


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/v1/items/abc")
    await client.get("/v1/items/def")
    text = (await client.get("/metrics")).text
    labels = 'method="GET",route="/v1/items/{item_id}",status="200"'
    assert f"nexus_http_requests_total{{{labels}}} 2.0" in text
    assert "nexus_http_request_duration_seconds_bucket" in text


async def test_unknown_path_is_404_envelope(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/nothing-here", json={})
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "unknown_url"
    assert_openai_schema("ErrorResponse", resp.json())


async def test_wrong_method_is_405_envelope(client: httpx.AsyncClient) -> None:
    resp = await client.delete("/v1/items/x")
    assert resp.status_code == 405
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert_openai_schema("ErrorResponse", resp.json())


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/v1/items", content=b'{"name": "x",', headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_json"
    assert_openai_schema("ErrorResponse", resp.json())


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"count": 1}, "name", "missing_required_parameter"),
        ({"name": "x", "count": 0}, "count", "invalid_value"),
        ({"name": "x", "count": 1, "tags": ["a", 3]}, "tags[1]", "invalid_value"),
    ],
)
async def test_validation_error_names_param(
    client: httpx.AsyncClient, body: dict[str, object], param: str, code: str
) -> None:
    resp = await client.post("/v1/items", json=body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")


async def test_body_must_be_an_object(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/items", json=[1, 2])
    assert resp.status_code == 400
    assert "JSON object" in resp.json()["error"]["message"]


async def test_nexus_errors_render_their_status_and_code(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v1/items/missing-model")
    assert resp.status_code == 404
    assert resp.json()["error"] == {
        "message": "The model 'gpt-x' does not exist or is not served here.",
        "type": "invalid_request_error", "param": "model", "code": "model_not_found",
    }
    resp = await client.get("/v1/items/bad")
    assert (resp.status_code, resp.json()["error"]["param"]) == (400, "item_id")


async def test_unexpected_error_is_500_without_trace(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        resp = await client.get("/v1/boom", headers={"x-request-id": "boom-1"})
    assert resp.status_code == 500
    body = resp.json()
    assert_openai_schema("ErrorResponse", body)
    assert "secret internal detail" not in resp.text
    assert "Traceback" not in resp.text
    assert "boom-1" in body["error"]["message"]
    assert resp.headers["x-request-id"] == "boom-1"
    assert any("secret internal detail" in (r.exc_text or "") for r in caplog.records)


async def test_request_id_is_echoed_and_forwardable(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v1/items/abc", headers={"X-Request-ID": "client-chosen-42"})
    assert resp.headers["x-request-id"] == "client-chosen-42"
    assert resp.json()["X-Request-ID"] == "client-chosen-42"


async def test_request_id_generated_when_absent_or_unsafe(client: httpx.AsyncClient) -> None:
    first = await client.get("/v1/items/a")
    second = await client.get("/v1/items/a", headers={"X-Request-ID": "bad id\twith spaces"})
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2
    assert all(len(i) == 32 for i in ids)
    assert second.json()["X-Request-ID"] == second.headers["x-request-id"]


async def test_streaming_passes_through(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v1/stream")
    assert resp.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert "x-request-id" in resp.headers
