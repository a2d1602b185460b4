"""The console's own endpoints, in process: the page, its assets, the metadata the gateway
routes by, and errors in the OpenAI envelope."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.main import build_app
from app.routes import ASSETS
from app.settings import ConsoleSettings


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(ConsoleSettings(etcd_endpoints="", log_level="WARNING"))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as c:
            yield c


async def test_page_and_assets_are_served_with_a_strict_policy(client: httpx.AsyncClient) -> None:
    page = await client.get("/console")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "connect-src 'self'" in csp  # the page talks to its own origin (the gateway) only
    assert 'src="console/app.js"' in page.text  # relative: works at /console and behind aliases
    for name, media in [("app.js", "text/javascript"), ("app.css", "text/css")]:
        resp = await client.get(f"/console/{name}")
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith(media)
        assert resp.headers["cache-control"] == "no-cache"
        again = await client.get(
            f"/console/{name}", headers={"If-None-Match": resp.headers["etag"]}
        )
        assert again.status_code == 304


def test_the_ui_keeps_no_token_in_storage() -> None:
    lines = ASSETS["app.js"].body.decode().splitlines()
    code = "\n".join(line for line in lines if not line.lstrip().startswith("//"))
    for banned in ("localStorage", "sessionStorage", "document.cookie", "innerHTML"):
        assert banned not in code, banned


async def test_unknown_asset_is_404_in_the_envelope(client: httpx.AsyncClient) -> None:
    for path in ("/console/nope.js", "/console/" + "x" * 150, "/console/..%2Fmain.py"):
        resp = await client.get(path)
        assert resp.status_code == 404, path
        error = resp.json()["error"]
        assert error["code"] in ("not_found", "unknown_url")  # a decoded slash matches no route
        assert len(error["message"]) < 120  # user input quoted cut short
    assert (await client.get("/console/" + "y" * 300)).status_code == 400


async def test_metadata_advertises_public_page_and_assets(client: httpx.AsyncClient) -> None:
    meta = (await client.get("/v1/metadata")).json()
    assert meta["service"]["name"] == "console"
    endpoints = {(e["method"], e["path"]): e for e in meta["endpoints"]}
    assert set(endpoints) == {
        ("GET", "/console"),
        ("GET", "/console/"),
        ("GET", "/console/{asset}"),
    }
    assert all(e["public"] for e in endpoints.values())


async def test_a_trailing_slash_redirects_to_the_page(client: httpx.AsyncClient) -> None:
    resp = await client.get("/console/")
    assert resp.status_code == 308
    assert resp.headers["location"] == "/console"
    meta = (await client.get("/v1/metadata")).json()
    slash = [e for e in meta["endpoints"] if e["path"] == "/console/"]
    assert slash
    assert slash[0].get("public") is True  # the gateway routes it without a bearer
