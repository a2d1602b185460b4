"""The gateway's own endpoints, readiness, and the seam where auth will plug in."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import respx
from asgi_lifespan import LifespanManager

from app.guard import Access, Decision
from app.main import build_app
from app.settings import GatewaySettings
from nexus_kit import AuthenticationError, CheckResult
from tests.support import assert_openai_schema, gateway, instance, meta_json, metadata, settings
from tests.support import snapshot as make_snapshot
from tests.upstream import FakeUpstream, Reply, Seen, answer

OLLAMA = "http://ollama.test"
AUTH = "http://auth.test"


def mock_backends(mock: respx.MockRouter) -> None:
    tags = [{"name": "llama3:latest", "modified_at": "2024-05-10T12:34:56Z"}, {"name": "nomic"}]
    mock.get(f"{OLLAMA}/api/tags").respond(json={"models": tags})
    mock.get(f"{OLLAMA}/api/version").respond(json={"version": "0.5.0"})
    auth = metadata("auth", [("POST", "/v1/auth/login"), ("GET", "/v1/me")], models=["nomic"],
                    public=frozenset({"/v1/auth/login"}))  # fmt: skip
    mock.get(f"{AUTH}/v1/metadata").respond(json=meta_json(auth))


def config(**overrides: Any) -> GatewaySettings:
    return settings(ollama_base_url=OLLAMA, static_backends={"auth": AUTH}, **overrides)


async def test_models_are_the_union_of_ready_instances_in_openai_shape() -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock_backends(mock)
        async with gateway(config()) as (client, _):
            body = (await client.get("/v1/models")).json()
            assert_openai_schema("ListModelsResponse", body)
            ids = [m["id"] for m in body["data"]]
            assert sorted(ids) == ["llama3:latest", "nomic"]  # "nomic" listed once
            llama = next(m for m in body["data"] if m["id"] == "llama3:latest")
            assert (llama["owned_by"], llama["created"]) == ("ollama", 1715344496)
            one = await client.get("/v1/models/llama3:latest")
            assert one.json()["id"] == "llama3:latest"
            missing = await client.get("/v1/models/org/none")
            assert_openai_schema("ErrorResponse", missing.json())
            assert missing.json()["error"]["code"] == "model_not_found"


async def test_unready_instances_leave_the_model_list() -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock_backends(mock)
        async with gateway(config()) as (client, state):
            ollama = next(i for i in state.table.snapshot.instances if i.service == "ollama")
            for _ in range(3):  # failures alone never eject the only instance (upstreams.py)
                state.upstreams.failure(ollama.key, "refused")
            ids = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
            assert "nomic" in ids
            assert len(ids) > 1
            state.upstreams.probed(ollama.key, CheckResult(False, "503"))
            ids = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
            assert ids == ["nomic"]


async def test_routes_show_provenance_model_service_instance_lease_revision() -> None:
    async with gateway(settings()) as (client, state):
        meta = metadata("llm", [("POST", "/v1/chat/completions")], models=["m1"])
        state.apply(
            make_snapshot(instance("llm", 1, meta=meta, lease=42, revision=17), revision=20)
        )
        body = (await client.get("/v1/routes")).json()
        assert body["revision"] == 20
        chat = next(r for r in body["data"] if r["path"] == "/v1/chat/completions")
        (target,) = chat["targets"]
        assert target["service"] == "llm"
        assert target["instance_id"] == "llm-1"
        assert (target["lease"], target["revision"], target["models"]) == (42, 17, ["m1"])
        assert {"path": "/services/llm/v1/chat/completions", "service": "llm"}.items() <= next(
            r for r in body["data"] if r["service"] == "llm"
        ).items()
        (model,) = body["models"]
        assert model["model"] == "m1"
        assert model["served_by"][0]["lease"] == 42


async def test_services_list_instances_with_source_state_and_last_seen() -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock_backends(mock)
        async with gateway(config()) as (client, _):
            body = (await client.get("/v1/services")).json()
            names = [s["name"] for s in body["data"]]
            assert names == ["auth", "ollama"]
            (auth,) = body["data"][0]["instances"]
            assert (auth["source"], auth["state"], auth["kind"], auth["base_url"]) == (
                "env", "ready", "nexus", AUTH,
            )  # fmt: skip
            assert auth["last_seen"]


async def test_readyz_is_503_until_the_first_metadata_round_then_lists_upstreams() -> None:
    release = asyncio.Event()

    async def held(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(404)

    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{AUTH}/v1/metadata").mock(side_effect=held)
        app = build_app(settings(static_backends={"auth": AUTH}))
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                early = await client.get("/readyz")
                assert early.status_code == 503
                assert early.json()["checks"]["discovery"]["status"] == "fail"
                release.set()
                await app.state.gateway.discovery.synced.wait()
                ready = await client.get("/readyz")
                assert ready.status_code == 200
                upstreams = ready.json()["checks"]["upstreams"]
                assert upstreams["critical"] is False
                assert "auth/auth-env-0=pending (HTTP 404)" in upstreams["detail"]


async def test_the_gateway_describes_itself() -> None:
    async with gateway(settings()) as (client, _):
        body = (await client.get("/v1/metadata")).json()
        assert body["service"]["name"] == "gateway"
        ops = {e["operation_id"] for e in body["endpoints"]}
        assert {"models.list", "gateway.routes", "gateway.services"} <= ops


# -- the auth seam ----------------------------------------------------------------------


class DenyUnlessPublic:
    """A stand-in for issue 4's guard: public passes, the rest needs ``Bearer ok``."""

    def __init__(self) -> None:
        self.seen: list[Access] = []

    async def __call__(self, access: Access) -> Decision:
        self.seen.append(access)
        if not access.public and (b"authorization", b"Bearer ok") not in access.headers:
            raise AuthenticationError()
        return Decision(headers=[(b"x-ratelimit-remaining-requests", b"99")])


async def test_a_guard_sees_every_request_with_its_public_flag() -> None:
    guard = DenyUnlessPublic()
    # The proxied call goes over a real socket (aiohttp), so the auth backend is a real fake.
    auth = FakeUpstream(metadata("auth", [("POST", "/v1/auth/login"), ("GET", "/v1/me")],
                                 public=frozenset({"/v1/auth/login"})))  # fmt: skip
    auth.route("POST", "/v1/auth/login", answer(Reply.json({"token": "t"})))
    with respx.mock(assert_all_called=False) as mock:
        mock_backends(mock)
        mock.route(host="127.0.0.1").pass_through()
        await auth.start()
        cfg = settings(ollama_base_url=OLLAMA, static_backends={"auth": auth.url},
                       nexus_cors_origins="https://app.example")  # fmt: skip
        async with auth, gateway(cfg, guard=guard) as (client, _):
            assert (await client.get("/health")).status_code == 200
            refused = await client.get("/v1/models")
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "invalid_api_key"
            assert refused.headers["www-authenticate"] == "Bearer"
            assert refused.headers["x-request-id"]
            allowed = await client.get("/v1/models", headers={"authorization": "Bearer ok"})
            assert allowed.status_code == 200
            assert allowed.headers["x-ratelimit-remaining-requests"] == "99"
            login = await client.post("/v1/auth/login", json={})
            assert login.status_code == 200  # marked public by the auth service
            assert (await client.get("/v1/me")).status_code == 401
            preflight = await client.options(
                "/v1/chat/completions",
                headers={"origin": "https://app.example", "access-control-request-method": "POST"},
            )
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        public = {(a.path, a.public) for a in guard.seen}
        assert ("/v1/auth/login", True) in public
        assert ("/v1/me", False) in public
        assert ("/health", True) in public
        assert all(a.method != "OPTIONS" for a in guard.seen)


async def test_proxied_responses_and_streams_carry_the_gateways_cors_answer() -> None:
    """A browser's cross-origin call through the proxy: the allowed origin gets its CORS
    headers on a JSON answer and on a stream (the request headers a stream lets go of are
    read first); another origin gets none, even when the upstream answers ``*`` itself."""
    events = b'data: {"n": 1}\n\ndata: [DONE]\n\n'
    upstream_cors = [("access-control-allow-origin", "*"), ("access-control-allow-headers", "*")]
    fake = FakeUpstream(metadata("llm", [("POST", "/v1/chat/completions")], models=["m"]))

    async def reply(seen: Seen) -> Reply:
        if b'"stream":true' in seen.body:
            return Reply(200, events, [("content-type", "text/event-stream"), *upstream_cors])
        return Reply.json({"id": "c", "choices": []}, headers=upstream_cors)

    fake.route("POST", "/v1/chat/completions", reply)
    async with fake:
        cfg = settings(static_backends={"llm": fake.url}, nexus_cors_origins="https://app.example")
        async with gateway(cfg) as (client, _):
            for stream in (False, True):
                body: dict[str, Any] = {"model": "m", "messages": [], "stream": stream}
                allowed = await client.post("/v1/chat/completions", json=body,
                                            headers={"origin": "https://app.example"})  # fmt: skip
                assert allowed.status_code == 200, allowed.text
                assert allowed.headers.get_list("access-control-allow-origin") == [
                    "https://app.example"
                ]
                other = await client.post("/v1/chat/completions", json=body,
                                          headers={"origin": "https://other.example"})  # fmt: skip
                assert other.status_code == 200, other.text
                assert "access-control-allow-origin" not in other.headers
                assert "access-control-allow-headers" not in other.headers


async def test_without_cors_origins_there_are_no_cors_headers() -> None:
    async with gateway(settings()) as (client, _):
        resp = await client.get("/health", headers={"origin": "https://app.example"})
        assert "access-control-allow-origin" not in resp.headers
