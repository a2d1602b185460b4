"""``/docs`` in a real browser: Swagger UI loads from the gateway alone, "Authorize" with an API
key, then "Try it out" on ``GET /v1/models`` gets a 200 (and a 401 without the key).

Needs ``/usr/bin/chromium`` (the console's browser tests install it the same way); skipped
without it outside CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.main import build_app
from nexus_testing import UvicornThread, wait_for_http
from tests.support import settings
from tests.test_apidoc import BearerGuard

pytestmark = pytest.mark.integration

CHROMIUM = Path(os.environ.get("CONSOLE_TEST_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope, closed at its end: Playwright's sync API marks an asyncio loop running in
    # this thread while open, which the async tests of later modules would trip over.
    if not CHROMIUM.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing (apt-get install -y chromium)")
        pytest.skip(f"needs {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def gw() -> Iterator[UvicornThread]:
    with UvicornThread(build_app(settings(), guard=BearerGuard())) as server:
        wait_for_http(f"{server.url}/health", timeout_s=15)
        yield server


def models_block(page: Any) -> Any:
    path = page.locator('.opblock-summary-path[data-path="/v1/models"]')
    return page.locator(".opblock-get").filter(has=path)


def try_models(page: Any) -> str:
    """Expand GET /v1/models and execute; the status Swagger UI shows."""
    block = models_block(page)
    block.locator(".opblock-summary").click()
    # "Try it out" is on from the start (tryItOutEnabled): Execute is there at once.
    block.locator("button.execute").click()
    status = block.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    return str(status.inner_text()).strip()


def test_try_it_out_with_an_api_key(browser: Any, gw: UvicornThread) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    external: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(gw.url) else external.append(r.url))
    try:
        page.goto(f"{gw.url}/docs")
        models_block(page).wait_for()
        assert try_models(page) == "401"  # no key yet
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("request", lambda r: None if r.url.startswith(gw.url) else external.append(r.url))
        page.goto(f"{gw.url}/docs")
        page.locator(".auth-wrapper button.authorize").click()
        page.locator(".auth-container input").first.fill("good")
        page.locator(".auth-btn-wrapper button.authorize").click()
        page.locator(".auth-btn-wrapper button.btn-done").click()
        assert try_models(page) == "200"
    finally:
        context.close()
    assert external == [], "Swagger UI fetched something from outside the gateway"
