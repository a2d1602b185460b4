"""The template's example endpoint, in process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.main import build_app
from app.settings import TemplateSettings


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(TemplateSettings(service_name="tpl", etcd_endpoints=""))
    async with LifespanManager(app) as m, httpx.AsyncClient(
        transport=httpx.ASGITransport(app=m.app), base_url="http://t"
    ) as c:
        yield c


async def test_echo_returns_message_and_service(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/echo", json={"message": "hello"})
    assert resp.status_code == 200
    assert resp.json() == {"message": "hello", "service": "tpl"}


@pytest.mark.parametrize(
    ("body", "param"),
    [({}, "message"), ({"message": ""}, "message"), ({"message": 3}, "message"),
     ({"message": "x", "extra": 1}, "extra")],
)
async def test_bad_bodies_are_400(client: httpx.AsyncClient, body: object, param: str) -> None:
    resp = await client.post("/v1/echo", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == param


async def test_metadata_advertises_echo(client: httpx.AsyncClient) -> None:
    meta = (await client.get("/v1/metadata")).json()
    assert meta["service"]["name"] == "tpl"
    assert [(e["method"], e["path"], e["operation_id"]) for e in meta["endpoints"]] == [
        ("POST", "/v1/echo", "template.echo")
    ]
