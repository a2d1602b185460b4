"""Slowness is not absence: a model refresh or probe that times out keeps the instance.

Ollama's ``/api/tags`` and an OpenAI-compatible server's ``/v1/models`` are re-read every
``OLLAMA_REFRESH_S``; on a saturated box that read can time out while the server still serves
requests. The gateway keeps the last model list (and the instance) until an answer changes it,
and a probe that times out does not take out the last instance of a service (upstreams.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import httpx
import pytest

from app import ollama as ollama_kind
from app.discovery import Instance
from app.grace import LeaseGrace
from app.state import GatewayState
from nexus_kit import CheckResult, ModelInfo
from tests.support import gateway, instance, settings
from tests.upstream import FakeUpstream, Reply, Seen, answer

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"id": "c1", "object": "chat.completion", "choices": []}


async def hang(_: Seen) -> Reply:
    await asyncio.sleep(30)  # cancelled when the fake closes
    return Reply()


def ollama() -> tuple[FakeUpstream, str]:
    fake = FakeUpstream()
    fake.route("GET", "/api/tags", answer(Reply.json({"models": [{"name": "llama3.2:latest"}]})))
    fake.route("GET", "/api/version", answer(Reply.json({"version": "0.14.0"})))
    return fake, "/api/tags"


def vllm() -> tuple[FakeUpstream, str]:
    fake = FakeUpstream()
    models = {"object": "list", "data": [{"id": "llama3.2", "object": "model",
                                          "owned_by": "vllm", "max_model_len": 8192}]}  # fmt: skip
    fake.route("GET", "/v1/models", answer(Reply.json(models)))
    fake.route("GET", "/health", answer(Reply()))
    return fake, "/v1/models"


@asynccontextmanager
async def behind(kind: str, fake: FakeUpstream) -> AsyncIterator[tuple[httpx.AsyncClient,
                                                                      GatewayState]]:  # fmt: skip
    where = {"ollama_base_url": fake.url} if kind == "ollama" else {
        "nexus_openai_upstreams": f"vllm={fake.url}"}  # fmt: skip
    config = settings(discovery_metadata_timeout_s=0.2, health_probe_interval_s=0.1, **where)
    async with gateway(config) as (client, state):
        yield client, state


async def refresh_timed_out(state: GatewayState) -> Instance:
    (instance,) = state.table.snapshot.instances
    state.discovery.refresh(instance.key)
    for _ in range(100):  # bounded: the fetch times out after 0.2 s
        (current,) = state.table.snapshot.instances
        if current.error is not None:
            return current
        await asyncio.sleep(0.05)
    raise AssertionError("the refresh never failed")


@pytest.mark.parametrize("make", [ollama, vllm], ids=["ollama", "openai"])
async def test_a_timed_out_model_refresh_keeps_the_instance_and_its_models(make: object) -> None:
    fake, models_path = make()  # type: ignore[operator]
    async with fake, behind("ollama" if models_path == "/api/tags" else "openai", fake) as (
        client, state,
    ):  # fmt: skip
        fake.route("POST", "/v1/chat/completions", answer(Reply.json(COMPLETION)))
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        fake.route("GET", models_path, hang)
        fake.route("GET", "/api/version" if models_path == "/api/tags" else "/health", hang)
        instance = await refresh_timed_out(state)
        assert instance.error == "timed out"
        assert instance.metadata is not None
        model_id = "llama3.2:latest" if models_path == "/api/tags" else "llama3.2"
        assert [m.id for m in instance.metadata.models] == [model_id]
        await asyncio.sleep(0.5)  # a few probe rounds, each timing out: slow is not gone
        assert state.upstreams.describe(instance) == "ready"
        resp = await client.post("/v1/chat/completions", json=CHAT)
        assert resp.status_code == 200, resp.text
        listed = (await client.get("/v1/models")).json()["data"]
        assert model_id in {m["id"] for m in listed}


def test_a_failed_refresh_does_not_cost_the_lease_grace() -> None:
    """A key that expires while its model list is being re-read still gets the grace."""
    base = instance("ollama", lease=7, source="etcd", kind="ollama")
    models = [ModelInfo(id="llama3.2:latest", owned_by="ollama")]
    known = replace(base, metadata=ollama_kind.placeholder(base).model_copy(
        update={"models": models}))  # fmt: skip
    grace = LeaseGrace(30, 1, probe=_unused, current=lambda _: None, expire=lambda *_: None)
    assert grace.applies_to(replace(known, error="timed out"))
    never_answered = replace(base, metadata=ollama_kind.placeholder(base), error="timed out")
    assert not grace.applies_to(never_answered)


async def _unused(_: Instance) -> CheckResult:
    raise AssertionError("not probed here")
