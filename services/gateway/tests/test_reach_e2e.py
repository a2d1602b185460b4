"""Reach, end to end: real SDKs -> a real gateway (uvicorn) -> fakes of Ollama, vLLM,
llama.cpp and a hosted API, with a real etcd for registrations and aliases.

Covers the Responses API (openai SDK, plain and streamed), the Messages API (anthropic SDK,
plain and streamed, errors in Anthropic's shape), OpenAI paths without ``/v1``,
``/v1/models/{id}`` for every name routing accepts, ``kind: openai`` upstreams registered by
an etcd put with no restart (vLLM), their health (llama.cpp loading) and credentials (a hosted
API's key from the gateway's env, the client's never forwarded), aliases with fallback, and
``invalid_json`` on a body that does not parse.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from app.main import build_app
from nexus_testing import EtcdServer, UvicornThread, wait_for_http, wait_until
from tests.llm_fakes import Gate, Server, ollama, openai_server
from tests.support import settings

pytestmark = pytest.mark.integration
PREFIX = "/nexus/services/"
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer().start()
    yield server
    server.stop()
    server.cleanup()


@pytest.fixture(scope="module")
def ollama_gate() -> Gate:
    return Gate()


@pytest.fixture(scope="module")
def gw(etcd: EtcdServer, ollama_gate: Gate) -> Iterator[str]:
    with UvicornThread(ollama(ollama_gate)) as upstream:
        config = settings(
            ollama_base_url=upstream.url, etcd_endpoints=etcd.endpoint,
            health_probe_interval_s=0.2, ollama_refresh_s=0.5,
        )  # fmt: skip
        with UvicornThread(build_app(config)) as gateway:
            wait_for_http(f"{gateway.url}/readyz", timeout_s=15)
            yield gateway.url


@pytest.fixture(scope="module")
def sdk(gw: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gw}/v1", api_key="sk-client-secret", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def claude(gw: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gw, api_key="sk-client-secret", max_retries=0) as c:
        yield c


def register(etcd: EtcdServer, name: str, url: str, **extra: Any) -> str:
    key = f"{PREFIX}{name}/{name}-1"
    etcd.put(key, orjson.dumps({"name": name, "base_url": url, **extra}).decode())
    return key


def model_ids(gw: str) -> set[str]:
    return {m["id"] for m in httpx.get(f"{gw}/v1/models", timeout=5).json()["data"]}


# -- Ollama's whole surface -------------------------------------------------------------


def test_responses_plain_through_the_gateway(sdk: openai.OpenAI, ollama_gate: Gate) -> None:
    reply = sdk.responses.create(model="llama3.2", input="hi")
    assert reply.output_text == "Hello there"
    seen = ollama_gate.headers[-1]
    assert "authorization" not in seen  # the client's key stays at the gateway
    assert seen["x-request-id"]


def test_responses_stream_passes_named_events(sdk: openai.OpenAI) -> None:
    types, text = [], []
    with sdk.responses.stream(model="llama3.2", input="hi") as stream:
        for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                text.append(event.delta)
    assert "".join(text) == "Hello there"
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"


def test_anthropic_messages_plain_and_stream(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="llama3.2", max_tokens=64, messages=[
        {"role": "user", "content": "hi"}])  # fmt: skip
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello there"
    hi: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hi"}]
    with claude.messages.stream(model="llama3.2", max_tokens=64, messages=hi) as stream:
        assert "".join(stream.text_stream) == "Hello there"


def test_messages_errors_come_in_anthropics_shape(claude: anthropic.Anthropic, gw: str) -> None:
    with pytest.raises(anthropic.NotFoundError) as raised:
        claude.messages.create(model="nope", max_tokens=8, messages=[
            {"role": "user", "content": "hi"}])  # fmt: skip
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    bad = httpx.post(f"{gw}/v1/messages", content=b'{"model": "llama3.2", "messages": [}',
                     headers={"content-type": "application/json"})  # fmt: skip
    assert bad.status_code == 400
    assert bad.json()["type"] == "error"
    assert bad.json()["error"]["type"] == "invalid_request_error"


def test_an_older_ollama_gets_only_the_paths_its_version_serves(etcd: EtcdServer, gw: str) -> None:
    gate = Gate()
    with UvicornThread(ollama(gate, version="0.13.5", models=("old:latest",))) as old:
        key = register(etcd, "ollama-old", old.url, kind="ollama")
        try:
            wait_until(lambda: "old:latest" in model_ids(gw), 10, "the old Ollama's model")
            responses = httpx.post(f"{gw}/v1/responses", json={"model": "old", "input": "hi"})
            assert responses.status_code == 200, responses.text
            assert responses.json()["output"][0]["content"][0]["text"] == "Hello there"
            messages = httpx.post(f"{gw}/v1/messages", json={"model": "old", "max_tokens": 8,
                                                             "messages": USER})  # fmt: skip
            assert messages.status_code == 404  # 0.13.5 has no /v1/messages: not routed there
            assert messages.json()["error"]["type"] == "not_found_error"
            assert len(gate.bodies) == 1  # only the Responses call reached it
        finally:
            etcd.delete(key)


def test_openai_paths_without_v1(gw: str) -> None:
    with openai.OpenAI(base_url=gw, api_key="k", max_retries=0) as bare:
        reply = bare.chat.completions.create(model="llama3.2", messages=USER)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == "ollama:Hello there"
        assert "llama3.2:latest" in {m.id for m in bare.models.list()}


def test_retrieve_answers_every_name_routing_accepts(sdk: openai.OpenAI) -> None:
    assert sdk.models.retrieve("llama3.2").id == "llama3.2"
    assert sdk.models.retrieve("llama3.2:latest").owned_by == "ollama"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("nope")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses", "/chat/completions"])
@pytest.mark.parametrize("model", ["llama3.2", "no-such-model"])
def test_a_body_that_does_not_parse_is_invalid_json(gw: str, path: str, model: str) -> None:
    body = f'{{"model": "{model}", "messages": [}}'.encode()
    resp = httpx.post(gw + path, content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "invalid_json"


# -- kind openai -----------------------------------------------------------------------------


def test_a_vllm_put_in_etcd_is_routed_without_a_restart(etcd: EtcdServer, gw: str,
                                                        sdk: openai.OpenAI) -> None:  # fmt: skip
    vllm = Server("vllm", ("Qwen/Qwen2.5-0.5B-Instruct",))
    with UvicornThread(openai_server(vllm)) as up:
        key = register(etcd, "vllm", f"{up.url}/v1", kind="openai")  # as the SDK spells it
        try:
            wait_until(lambda: "Qwen/Qwen2.5-0.5B-Instruct" in model_ids(gw), 10, "vLLM's model")
            reply = sdk.chat.completions.create(model="Qwen/Qwen2.5-0.5B-Instruct", messages=USER)  # type: ignore[arg-type]
            assert reply.choices[0].message.content == "vllm:Hello there"
            assert "authorization" not in vllm.gate.headers[-1]
            retrieved = sdk.models.retrieve("Qwen/Qwen2.5-0.5B-Instruct")
            assert retrieved.owned_by == "vllm"
        finally:
            etcd.delete(key)
        wait_until(lambda: "Qwen/Qwen2.5-0.5B-Instruct" not in model_ids(gw), 10, "it gone")


def test_a_hosted_api_gets_the_gateways_key_never_the_clients(
    etcd: EtcdServer, gw: str, sdk: openai.OpenAI
) -> None:
    hosted = Server("hosted", ("hosted-large",), key="sk-upstream-123")
    os.environ.pop("NEXUS_UPSTREAM_KEY_REACH_TEST", None)
    with UvicornThread(openai_server(hosted)) as up:
        key = register(etcd, "hosted", up.url, kind="openai",
                       api_key_env="NEXUS_UPSTREAM_KEY_REACH_TEST")  # fmt: skip
        try:

            def error() -> str:
                docs = httpx.get(f"{gw}/v1/services", timeout=5).json()["data"]
                found = [i for s in docs if s["name"] == "hosted" for i in s["instances"]]
                return str(found[0]["error"]) if found and found[0]["error"] else ""

            assert "NEXUS_UPSTREAM_KEY_REACH_TEST" in wait_until(error, 10, "a missing key named")
            os.environ["NEXUS_UPSTREAM_KEY_REACH_TEST"] = "sk-upstream-123"
            wait_until(lambda: "hosted-large" in model_ids(gw), 15, "the hosted models")
            reply = sdk.chat.completions.create(model="hosted-large", messages=USER)  # type: ignore[arg-type]
            assert reply.choices[0].message.content == "hosted:Hello there"
            assert hosted.gate.headers[-1]["authorization"] == "Bearer sk-upstream-123"
            assert all("sk-client-secret" not in str(h) for h in hosted.gate.headers)
        finally:
            etcd.delete(key)
            os.environ.pop("NEXUS_UPSTREAM_KEY_REACH_TEST", None)


def test_llamacpp_loading_is_not_ready_until_its_health_says_ok(
    etcd: EtcdServer, gw: str
) -> None:
    llama = Server("llamacpp", ("gemma-3-1b-it-Q4_K_M.gguf",), loading=True)
    with UvicornThread(openai_server(llama)) as up:
        key = register(etcd, "llamacpp", up.url, kind="openai")
        try:

            def state() -> str:
                docs = httpx.get(f"{gw}/v1/services", timeout=5).json()["data"]
                found = [i for s in docs if s["name"] == "llamacpp" for i in s["instances"]]
                return str(found[0]["state"]) if found else ""

            wait_until(lambda: state() == "unhealthy", 10, "llama.cpp unhealthy while loading")
            assert "gemma-3-1b-it-Q4_K_M.gguf" not in model_ids(gw)
            llama.loading = False
            wait_until(lambda: "gemma-3-1b-it-Q4_K_M.gguf" in model_ids(gw), 10, "its model")
        finally:
            etcd.delete(key)


# -- aliases -----------------------------------------------------------------------------


def test_aliases_admin_api_fallback_and_watch(etcd: EtcdServer, gw: str, sdk: openai.OpenAI,
                                              ollama_gate: Gate) -> None:  # fmt: skip
    vllm = Server("vllm", ("busy-model",))
    vllm.gate.unavailable.add("busy-model")
    with UvicornThread(openai_server(vllm)) as up:
        key = register(etcd, "busy", up.url, kind="openai")
        try:
            wait_until(lambda: "busy-model" in model_ids(gw), 10, "the busy model")
            put = httpx.put(f"{gw}/v1/aliases/gpt-4o-mini",
                            json={"models": ["not-served", "busy-model", "llama3.2"]})  # fmt: skip
            assert put.status_code == 200, put.text
            assert put.json() == {"object": "model.alias", "id": "gpt-4o-mini",
                                  "models": ["not-served", "busy-model", "llama3.2"]}  # fmt: skip
            listed = httpx.get(f"{gw}/v1/aliases").json()["data"]
            assert [a["id"] for a in listed] == ["gpt-4o-mini"]
            assert "gpt-4o-mini" in model_ids(gw)
            assert sdk.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
            reply = sdk.chat.completions.create(model="gpt-4o-mini", messages=USER)  # type: ignore[arg-type]
            assert reply.choices[0].message.content == "ollama:Hello there"
            assert vllm.gate.bodies[-1]["model"] == "busy-model"  # tried, 503, fell over
            assert ollama_gate.bodies[-1]["model"] == "llama3.2"  # the upstream's own name
        finally:
            etcd.delete(key)
    # Written straight to etcd (another replica, etcdctl): seen through the watch.
    etcd.put("/nexus/aliases/claude-3-5-haiku", '{"models": ["llama3.2"]}')
    wait_until(lambda: "claude-3-5-haiku" in model_ids(gw), 10, "an alias put in etcd")
    assert httpx.delete(f"{gw}/v1/aliases/gpt-4o-mini").status_code == 200
    assert httpx.get(f"{gw}/v1/aliases/gpt-4o-mini").status_code == 404
    etcd.delete("/nexus/aliases/claude-3-5-haiku")
    wait_until(lambda: "claude-3-5-haiku" not in model_ids(gw), 10, "the alias gone")


def test_another_replica_sees_an_alias_at_once(etcd: EtcdServer, gw: str) -> None:
    with UvicornThread(build_app(settings(etcd_endpoints=etcd.endpoint))) as replica:
        wait_for_http(f"{replica.url}/readyz", timeout_s=15)
        put = httpx.put(f"{gw}/v1/aliases/shared", json={"models": ["llama3.2"]})
        assert put.status_code == 200, put.text

        def seen() -> bool:
            return httpx.get(f"{replica.url}/v1/aliases/shared").status_code == 200

        wait_until(seen, 10, "the alias on the other replica")
        assert httpx.delete(f"{replica.url}/v1/aliases/shared").status_code == 200
        wait_until(lambda: httpx.get(f"{gw}/v1/aliases/shared").status_code == 404, 10,
                   "its removal on the first")  # fmt: skip


@pytest.mark.parametrize(
    ("alias", "body", "param"),
    [
        ("ok", b'{"models": []}', "models"),
        ("ok", b'{"models": ["a", "a"]}', "models"),
        ("ok", b'{"models": [1]}', "models"),
        ("ok", b'{"models": ["ok"]}', "models"),
        ("ok", b'{"models": [', None),
        ("bad%20name", b'{"models": ["a"]}', "alias"),
    ],
)
def test_alias_bad_input_is_400(gw: str, alias: str, body: bytes, param: str | None) -> None:
    resp = httpx.put(f"{gw}/v1/aliases/{alias}", content=body,
                     headers={"content-type": "application/json"})  # fmt: skip
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param
    assert httpx.delete(f"{gw}/v1/aliases/never-was").status_code == 404
