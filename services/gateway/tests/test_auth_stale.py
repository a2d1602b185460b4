"""Auth outage with stale-if-error (issue #12, fault 5).

Before: ten seconds into an auth outage (the positive cache's TTL) every API-key client, the
busiest included, got 503. Now a key auth called active within ``AUTH_STALE_IF_ERROR_S`` keeps
working while auth is unreachable, counted by a metric; a key auth called inactive never does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
from prometheus_client import generate_latest

from app.auth import Authenticator
from nexus_kit import AuthenticationError, ServiceUnavailableError
from tests.support import gateway, settings

AUTH = "http://auth.test"
INTROSPECT = f"{AUTH}/v1/auth/introspect"
KEY = b"Bearer nx-" + b"s" * 40
OTHER = b"Bearer nx-" + b"o" * 40
ACTIVE = {"active": True, "subject": "usr_1", "role": "user", "key_id": "key_1"}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> None:
        self.n += 1


def authenticator(http: httpx.AsyncClient, stale: Counter, **kw: Any) -> Authenticator:
    kw.setdefault("cache_ttl_s", 0.05)
    kw.setdefault("negative_ttl_s", 0.05)
    kw.setdefault("stale_if_error_s", 60.0)
    return Authenticator(lambda: http, lambda: AUTH, "internal-token-123456", on_stale=stale, **kw)


@respx.mock
async def test_a_recently_active_key_survives_the_outage_and_is_counted(
    http: httpx.AsyncClient,
) -> None:
    stale = Counter()
    auth = authenticator(http, stale)
    route = respx.post(INTROSPECT).respond(json=ACTIVE)
    assert (await auth.authenticate(KEY)).subject == "usr_1"
    route.side_effect = httpx.ConnectError("refused")
    await asyncio.sleep(0.1)  # past the positive cache: the next call asks auth, which is down
    assert (await auth.authenticate(KEY)).subject == "usr_1"
    assert stale.n == 1
    with pytest.raises(ServiceUnavailableError):  # never seen: no window to use
        await auth.authenticate(OTHER)
    route.side_effect = None
    route.respond(status_code=500)  # auth up but failing counts as unreachable too
    await asyncio.sleep(0.1)
    assert (await auth.authenticate(KEY)).subject == "usr_1"
    assert stale.n == 2


@respx.mock
async def test_revoked_stays_revoked_and_the_window_ends(http: httpx.AsyncClient) -> None:
    stale = Counter()
    auth = authenticator(http, stale)
    route = respx.post(INTROSPECT).respond(json=ACTIVE)
    await auth.authenticate(KEY)
    route.respond(json={"active": False})
    await asyncio.sleep(0.1)
    with pytest.raises(AuthenticationError):
        await auth.authenticate(KEY)
    route.side_effect = httpx.ConnectError("refused")
    await asyncio.sleep(0.1)
    with pytest.raises(ServiceUnavailableError):  # revoked before the outage: not admitted
        await auth.authenticate(KEY)
    short = authenticator(http, stale, stale_if_error_s=0.2)
    route.side_effect = None
    route.respond(json=ACTIVE)
    await short.authenticate(KEY)
    route.side_effect = httpx.ConnectError("refused")
    await asyncio.sleep(0.3)  # past the window
    with pytest.raises(ServiceUnavailableError):
        await short.authenticate(KEY)
    assert stale.n == 0


async def test_the_setting_and_metric_are_wired() -> None:
    async with gateway(settings(nexus_auth_enabled=True)) as (_, state):
        state._stale_admission()
        exposed = generate_latest(state.metrics.registry).decode()
        assert "nexus_gateway_auth_stale_admissions_total 1.0" in exposed
