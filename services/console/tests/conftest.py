"""The stack the browser tests drive, all real and on loopback: etcd, auth (SQLite), images and
tts (stub backends), the console, and a gateway that discovers them all through etcd; a fake
Ollama (tests/fake_ollama.py) serves chat. And a headless Debian Chromium driven by Playwright.

Browser tests need ``/usr/bin/chromium`` (``apt-get install -y chromium``; Playwright never
downloads a browser here). Without it they skip, except under ``CI=true``, where they fail."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from nexus_testing import EtcdServer, ServiceProcess, UvicornThread, wait_for_http, wait_until
from tests.fake_ollama import fake_ollama

SERVICES = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CONSOLE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip
PASSWORD = "correct horse battery staple"
ACCESS_TTL_S = 30  # the shortest the auth service allows: the refresh test waits one out


@dataclass
class Stack:
    gateway: str
    admin_key: str
    internal_token: str  # the gateway's credential for introspection and usage delivery
    etcd: EtcdServer
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    def new_user(self, role: str = "user") -> dict[str, Any]:
        body = {"username": f"{role}-{secrets.token_hex(4)}", "password": PASSWORD, "role": role}
        made = httpx.post(f"{self.gateway}/v1/users", json=body, headers=self.admin(), timeout=10)
        assert made.status_code == 201, made.text
        user: dict[str, Any] = made.json()
        return user

    def new_key(self, user_id: str) -> str:
        body = {"name": "browser-test", "user_id": user_id}
        made = httpx.post(
            f"{self.gateway}/v1/api-keys", json=body, headers=self.admin(), timeout=10
        )
        assert made.status_code == 201, made.text
        key: str = made.json()["key"]
        return key


def require_chromium() -> None:
    if CHROMIUM.is_file():
        return
    how = "install Debian's chromium (apt-get install -y chromium) to run them"
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests are required under CI=true: {CHROMIUM} is missing; {how}")
    pytest.skip(f"browser tests need {CHROMIUM}; {how}")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_chromium()
    tmp = tmp_path_factory.mktemp("stack")
    admin_key = "nx-" + secrets.token_urlsafe(32)
    internal = secrets.token_urlsafe(24)
    with ExitStack() as stack:
        etcd = EtcdServer().start()
        stack.callback(etcd.cleanup)
        registry = {"ETCD_ENDPOINTS": etcd.endpoint}
        ollama = stack.enter_context(UvicornThread(fake_ollama()))
        procs: dict[str, ServiceProcess] = {}

        def start(name: str, env: dict[str, str]) -> None:
            """Started together (the machine may be busy); waited for below."""
            procs[name] = ServiceProcess(
                SERVICES / name, env={"LOG_LEVEL": "WARNING", **registry, **env}
            ).start(wait=None)
            stack.callback(procs[name].stop)

        start("auth", {
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'auth.db'}",
            "JWT_SIGNING_KEY_FILE": str(tmp / "jwt.pem"),
            "NEXUS_ADMIN_API_KEY": admin_key, "NEXUS_INTERNAL_TOKEN": internal,
            "PASSWORD_HASH_TIME_COST": "1", "PASSWORD_HASH_MEMORY_KIB": "64",
            "PASSWORD_HASH_PARALLELISM": "1",
            "JWT_ACCESS_TTL_S": str(ACCESS_TTL_S),
        })  # fmt: skip
        start("images", {"IMAGES_BACKEND": "stub", "IMAGES_FILES_DIR": str(tmp / "images")})
        start("tts", {"TTS_BACKEND": "stub"})
        start("console", {})
        start("gateway", {
            "OLLAMA_BASE_URL": ollama.url, "NEXUS_INTERNAL_TOKEN": internal,
            "GATEWAY_METRICS_PORT": "0", "AUTH_CACHE_TTL_S": "1",
            "AUTH_NEGATIVE_CACHE_TTL_S": "1", "HEALTH_PROBE_INTERVAL_S": "1",
            "GC_FREEZE_AFTER_STARTUP": "false", "USAGE_SPOOL_DIR": str(tmp / "spool"),
            "USAGE_RETRY_MAX_S": "1",
        })  # fmt: skip
        for proc in procs.values():
            wait_for_http(f"{proc.url}/readyz", timeout_s=90)
        gateway = procs["gateway"].url
        up = Stack(gateway, admin_key, internal, etcd, procs)

        def routed() -> bool:
            models = httpx.get(f"{gateway}/v1/models", headers=up.admin(), timeout=5)
            ids = {m["id"] for m in models.json().get("data", [])} if models.is_success else set()
            page = httpx.get(f"{gateway}/console", timeout=5)
            return page.status_code == 200 and {"llama3.2:latest", "tts-1"} <= ids

        wait_until(routed, 30, "the gateway routes the console, chat and speech")
        yield up


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope: Playwright's sync API keeps an asyncio loop marked running in this thread
    # while it is open, which async tests of later modules would trip over.
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    yield tab
    context.close()
