"""Auth through the gateway, as a user sees it: the ``openai`` SDK against a real gateway, a
real auth service process (SQLite) and a fake Ollama; rate limits shared through real Redis."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.main import build_app
from nexus_testing import ServiceProcess, UvicornThread, wait_for_http
from tests.support import OllamaScript, auth_process, fake_ollama, meta_json, metadata, settings

pytestmark = pytest.mark.integration
ADMIN_KEY = "nx-" + secrets.token_urlsafe(32)
INTERNAL = secrets.token_urlsafe(24)
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def auth_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    tmp = tmp_path_factory.mktemp("auth")
    service = auth_process(tmp, ADMIN_KEY, INTERNAL).start(wait="/readyz")
    yield service
    service.stop()


SCRIPT = OllamaScript()


@pytest.fixture(scope="module")
def ollama() -> Iterator[UvicornThread]:
    with UvicornThread(fake_ollama(SCRIPT)) as upstream:
        yield upstream


@contextmanager
def running_gateway(auth_url: str, ollama_url: str, **overrides: Any) -> Iterator[str]:
    base: dict[str, Any] = {
        "nexus_auth_enabled": True, "nexus_internal_token": INTERNAL,
        "ollama_base_url": ollama_url, "static_backends": {"auth": auth_url},
        "auth_cache_ttl_s": 1.0, "auth_negative_cache_ttl_s": 1.0,
    }  # fmt: skip
    config = settings(**{**base, **overrides})
    with UvicornThread(build_app(config)) as gw:
        wait_for_http(f"{gw.url}/readyz", timeout_s=15)
        yield gw.url


@pytest.fixture(scope="module")
def gateway(auth_service: ServiceProcess, ollama: UvicornThread) -> Iterator[str]:
    with running_gateway(auth_service.url, ollama.url) as url:
        yield url


_OPENED: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_sdk_clients() -> Iterator[None]:
    """Each SDK client holds a connection pool: close them when the test ends."""
    yield
    while _OPENED:
        _OPENED.pop().close()


def sdk(gateway: str, key: str) -> openai.OpenAI:
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=key, max_retries=0)
    _OPENED.append(client)
    return client


def new_key(gateway: str, **body: Any) -> dict[str, Any]:
    resp = httpx.post(
        f"{gateway}/v1/api-keys", json={"name": "test", **body},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10,
    )  # fmt: skip
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


def user_key(gateway: str) -> str:
    """An API key of a fresh user with role ``user``."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    body = {"username": f"u{secrets.token_hex(4)}", "password": "correct horse battery"}
    made = httpx.post(f"{gateway}/v1/users", json=body, headers=admin)
    assert made.status_code == 201, made.text
    key: str = new_key(gateway, user_id=made.json()["id"])["key"]
    return key


def test_no_key_or_bad_key_is_authentication_error(gateway: str) -> None:
    with pytest.raises(openai.AuthenticationError) as info:  # no Authorization header at all
        sdk(gateway, "unused").models.list(extra_headers={"Authorization": openai.Omit()})
    assert info.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        sdk(gateway, "nx-" + "z" * 40).chat.completions.create(model="llama3.2", messages=MESSAGES)
    resp = httpx.get(f"{gateway}/v1/models", headers={"Authorization": "Basic abc"})
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "invalid_api_key"


def test_open_endpoints_need_no_key(gateway: str) -> None:
    for path in ("/health", "/readyz", "/v1/metadata", "/.well-known/jwks.json"):
        assert httpx.get(f"{gateway}{path}").status_code == 200, path


def test_valid_key_works_and_carries_limit_headers(gateway: str) -> None:
    key = new_key(gateway)["key"]
    client = sdk(gateway, key)
    raw = client.chat.completions.with_raw_response.create(model="llama3.2", messages=MESSAGES)
    assert raw.parse().choices[0].message.content == "Hello there"
    assert raw.headers["x-ratelimit-limit-requests"] == "600"
    assert int(raw.headers["x-ratelimit-remaining-requests"]) < 600
    assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    assert {m.id for m in client.models.list()} >= {"llama3.2:latest"}


def test_admin_views_need_an_admin(gateway: str) -> None:
    key = user_key(gateway)
    for path in ("/v1/routes", "/v1/services", "/v1/services/events"):
        resp = httpx.get(f"{gateway}{path}", headers={"Authorization": f"Bearer {key}"})
        assert resp.status_code == 403
        assert resp.json()["error"]["code"] == "permission_denied"
    # a user cannot list other users either (the auth service decides, behind the gateway)
    users = httpx.get(f"{gateway}/v1/users", headers={"Authorization": f"Bearer {key}"})
    assert users.status_code == 403
    admin = httpx.get(f"{gateway}/v1/routes", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert admin.status_code == 200


def test_revoked_key_stops_working_within_30s(gateway: str) -> None:
    created = new_key(gateway)
    client = sdk(gateway, created["key"])
    client.models.list()  # cached as valid now
    deleted = httpx.delete(
        f"{gateway}/v1/api-keys/{created['id']}", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert deleted.status_code == 200, deleted.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            client.models.list()
        except openai.AuthenticationError:
            return
        time.sleep(0.2)
    pytest.fail("a revoked key still worked 30 s later")


def test_jwt_from_login_works(gateway: str) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    user = {"username": f"u{secrets.token_hex(4)}", "password": "correct horse battery"}
    assert httpx.post(f"{gateway}/v1/users", json=user, headers=admin).status_code == 201
    tokens = httpx.post(f"{gateway}/v1/auth/token", json=user)  # public: no bearer
    assert tokens.status_code == 200, tokens.text
    access = tokens.json()["access_token"]
    reply = sdk(gateway, access).chat.completions.create(model="llama3.2", messages=MESSAGES)
    assert reply.choices[0].message.content == "Hello there"
    forged = access[:-4] + ("AAAA" if not access.endswith("AAAA") else "BBBB")
    with pytest.raises(openai.AuthenticationError):
        sdk(gateway, forged).models.list()


def test_rate_limited_key_gets_rate_limit_error_on_fourth_call(gateway: str) -> None:
    client = sdk(gateway, new_key(gateway, rate_limit_rpm=3)["key"])
    for _ in range(3):
        client.models.list()
    with pytest.raises(openai.RateLimitError) as info:
        client.models.list()
    assert info.value.code == "rate_limit_exceeded"
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 60
    assert info.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def nexus_echo(seen: list[dict[str, str]]) -> Starlette:
    """A Nexus service (its metadata at ``/v1/metadata``) that keeps the headers it got."""
    doc = meta_json(metadata("echo", [("POST", "/v1/echo")]))

    async def meta(_: Request) -> JSONResponse:
        return JSONResponse(doc)

    async def echo(request: Request) -> JSONResponse:
        seen.append(dict(request.headers))
        return JSONResponse({})

    return Starlette(
        routes=[Route("/v1/metadata", meta), Route("/v1/echo", echo, methods=["POST"])]
    )


def test_client_cannot_claim_an_identity(
    auth_service: ServiceProcess, ollama: UvicornThread
) -> None:
    """A Nexus service behind the gateway gets the caller's real identity, never the one the
    client sent; a server outside Nexus (Ollama here) gets none."""
    spoof = {"X-Nexus-Subject": "usr_admin", "X-Nexus-Role": "admin"}
    seen: list[dict[str, str]] = []
    with (
        UvicornThread(nexus_echo(seen)) as service,
        running_gateway(auth_service.url, ollama.url,
                        static_backends={"auth": auth_service.url, "echo": service.url}) as gw,
    ):  # fmt: skip
        key = user_key(gw)
        bearer = {"Authorization": f"Bearer {key}", **spoof}
        assert httpx.post(f"{gw}/v1/echo", json={}, headers=bearer).status_code == 200
        chat = {"model": "llama3.2", "messages": MESSAGES}
        assert httpx.post(f"{gw}/v1/chat/completions", json=chat, headers=bearer).status_code == 200
    assert seen[-1]["x-nexus-subject"] != "usr_admin"
    assert seen[-1]["x-nexus-subject"].startswith("usr_")
    assert seen[-1]["x-nexus-role"] == "user"
    to_ollama = SCRIPT.seen_headers[-1]
    assert "x-nexus-subject" not in to_ollama
    assert "x-nexus-role" not in to_ollama


def test_two_gateways_share_one_limit_through_redis(
    auth_service: ServiceProcess, ollama: UvicornThread
) -> None:
    redis = {"rate_limit_storage_url": "redis://127.0.0.1:6379/0"}
    with ExitStack() as stack:
        first = stack.enter_context(running_gateway(auth_service.url, ollama.url, **redis))
        second = stack.enter_context(running_gateway(auth_service.url, ollama.url, **redis))
        key = new_key(first, rate_limit_rpm=3)["key"]
        sdk(first, key).models.list()
        sdk(second, key).models.list()
        sdk(first, key).models.list()
        with pytest.raises(openai.RateLimitError):
            sdk(second, key).models.list()


def test_auth_down_cached_keys_keep_working_others_get_503(
    tmp_path: Path, ollama: UvicornThread
) -> None:
    auth = auth_process(tmp_path, ADMIN_KEY, INTERNAL).start(wait="/readyz")
    try:
        with running_gateway(auth.url, ollama.url, auth_cache_ttl_s=30.0) as gw:
            admin = sdk(gw, ADMIN_KEY)
            admin.models.list()  # now cached
            auth.stop()
            admin.models.list()  # auth is down: the cached key still works
            resp = httpx.get(f"{gw}/v1/models", headers={"Authorization": "Bearer nx-" + "q" * 40})
            assert resp.status_code == 503
            assert resp.headers["retry-after"]
            assert resp.json()["error"]["type"] == "service_unavailable"
    finally:
        auth.stop()
