"""Reach, in pieces: Ollama's version table, ``kind: openai`` registrations and settings,
where a key comes from, which paths gain ``/v1``, error dialects, alias bodies."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import pytest
from pydantic import ValidationError

from app import ollama, openai_upstream
from app.aliases import parse_models, with_model
from app.credentials import credential_header, is_alias_admin
from app.dialects import error_event, is_anthropic
from app.discovery import parse_registration, static_instances
from app.etcd import KeyValue
from app.prefixless import with_v1
from nexus_kit import InvalidRequestError, UpstreamTimeoutError
from tests.support import settings


@pytest.mark.parametrize(
    ("version", "extra"),
    [
        ("0.12.6", set()),
        ("0.13.2", set()),
        ("0.13.3", {"/v1/responses"}),
        ("0.13.5", {"/v1/responses"}),
        ("0.14.0", {"/v1/responses", "/v1/messages"}),
        ("0.14.3-rc1", {"/v1/responses", "/v1/messages"}),
        ("0.0.0", {"/v1/responses", "/v1/messages"}),  # a dev build
        ("unknown", set()),
    ],
)
def test_ollama_paths_follow_its_version(version: str, extra: set[str]) -> None:
    base = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
    assert {e.path for e in ollama.endpoints_for(version)} == base | extra


def _kv(value: Mapping[str, object], key: str = "/nexus/services/vllm/a") -> KeyValue:
    return KeyValue(key, orjson.dumps(value), 0, 1, 1)


def test_an_openai_registration_keeps_its_key_name_and_paths_and_drops_v1() -> None:
    entry = parse_registration("/nexus/services/", _kv({
        "name": "vllm", "base_url": "http://gpu:8000/v1/", "kind": "openai",
        "api_key_env": "NEXUS_UPSTREAM_KEY_VLLM", "paths": ["/v1/chat/completions", "GET /v1/x"],
    }))  # fmt: skip
    assert entry is not None
    assert (entry.kind, entry.base_url) == ("openai", "http://gpu:8000")
    assert entry.credential_env == "NEXUS_UPSTREAM_KEY_VLLM"
    eps = openai_upstream.endpoints(entry.paths)
    assert [(e.method, e.path, e.operation_id) for e in eps] == [
        ("POST", "/v1/chat/completions", "chat.completions"), ("GET", "/v1/x", "openai.v1.x")]


def test_a_registration_cannot_name_any_other_secret() -> None:
    value = {"name": "x", "base_url": "http://x", "kind": "openai",
             "api_key_env": "NEXUS_INTERNAL_TOKEN"}  # fmt: skip
    assert parse_registration("/nexus/services/", _kv(value)) is None


def test_static_openai_upstreams_from_env() -> None:
    upstreams = "vllm=http://a:8000/v1, vllm=http://b:8000,groq=https://api.groq.com/openai"
    config = settings(nexus_openai_upstreams=upstreams)
    found = {(i.service, i.base_url, i.credential_env) for i in static_instances(config)}
    assert found == {
        ("vllm", "http://a:8000", "NEXUS_UPSTREAM_KEY_VLLM"),
        ("vllm", "http://b:8000", "NEXUS_UPSTREAM_KEY_VLLM"),
        ("groq", "https://api.groq.com/openai", "NEXUS_UPSTREAM_KEY_GROQ"),
    }


@pytest.mark.parametrize("value", ["vllm", "Vllm=http://a", "vllm=ftp://a", "=http://a"])
def test_bad_static_openai_upstreams_name_the_variable(value: str) -> None:
    with pytest.raises(ValidationError, match="nexus_openai_upstreams"):
        settings(nexus_openai_upstreams=value)


def test_client_credentials_identity_and_cookies_never_go_to_a_synthesized_upstream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [hosted] = static_instances(settings(nexus_openai_upstreams="hosted=https://h"))
    sent = [("authorization", "Bearer nx-client"), ("x-api-key", "nx-client"),
            ("api-key", "nx-client"), ("x-nexus-subject", "usr_1"), ("x-nexus-role", "admin"),
            ("cookie", "session=s"), ("x-request-id", "r1")]  # fmt: skip
    assert openai_upstream.forward_headers(hosted, sent) == [("x-request-id", "r1")]
    monkeypatch.setenv("NEXUS_UPSTREAM_KEY_HOSTED", "sk-up")
    assert openai_upstream.forward_headers(hosted, sent)[-1] == ("authorization", "Bearer sk-up")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"authorization", b"Bearer a")], b"Bearer a"),
        ([(b"x-api-key", b"k1")], b"Bearer k1"),
        ([(b"api-key", b" k2 ")], b"Bearer k2"),
        ([(b"x-api-key", b"k1"), (b"authorization", b"Bearer a")], b"Bearer a"),
        ([(b"authorization", b""), (b"x-api-key", b"k1")], b"Bearer k1"),
        ([(b"x-api-key", b"")], None),
        ([], None),
    ],
)
def test_where_the_key_comes_from(
    headers: list[tuple[bytes, bytes]], expected: bytes | None
) -> None:
    assert credential_header(headers) == expected


def test_alias_admin_paths() -> None:
    assert is_alias_admin("/v1/aliases")
    assert is_alias_admin("/v1/aliases/x")
    assert not is_alias_admin("/v1/aliasesx")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/chat/completions", "/v1/chat/completions"),
        ("/models", "/v1/models"),
        ("/models/llama3.2", "/v1/models/llama3.2"),
        ("/responses", "/v1/responses"),
        ("/v1/chat/completions", None),
        ("/health", None),
        ("/services/tts/v1/audio/speech", None),
        ("/v1", None),
    ],
)
def test_which_paths_gain_v1(path: str, expected: str | None) -> None:
    assert with_v1(path) == expected


def test_error_dialects() -> None:
    assert is_anthropic("/v1/messages")
    assert is_anthropic("/v1/messages/count_tokens")
    assert is_anthropic("/services/ollama/v1/messages")
    assert not is_anthropic("/v1/messagesx")
    assert not is_anthropic("/v1/chat/completions")
    error = UpstreamTimeoutError("cut")
    assert error_event(error) == b"data: " + orjson.dumps(error.envelope()) + b"\n\n"
    event = error_event(error, anthropic=True)
    assert event.startswith(b"event: error\ndata: ")
    assert orjson.loads(event.split(b"data: ", 1)[1]) == {
        "type": "error", "error": {"type": "timeout_error", "message": "cut"}}  # fmt: skip


def test_alias_bodies() -> None:
    assert orjson.loads(with_model(b'{"model":"a","x":[1]}', "b")) == {"model": "b", "x": [1]}
    assert parse_models(b'{"models": ["a", "b"]}', "alias") == ("a", "b")
    with pytest.raises(InvalidRequestError):
        parse_models(b'{"models": "a"}', "alias")
