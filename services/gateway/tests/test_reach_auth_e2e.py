"""Keys as clients send them in the wild, end to end: the anthropic SDK with ``api_key``
(``x-api-key``) and with ``auth_token`` (a bearer), an Azure-style ``api-key`` header, all
checked by a real auth service process (SQLite) through a real gateway to a fake Ollama 0.14;
refusals on ``/v1/messages`` come in Anthropic's shape, and no client key reaches Ollama."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from app.main import build_app
from nexus_testing import UvicornThread, wait_for_http
from tests.llm_fakes import Gate, ollama
from tests.support import auth_process, settings

pytestmark = pytest.mark.integration
ADMIN_KEY = "nx-" + secrets.token_urlsafe(32)
INTERNAL = secrets.token_urlsafe(24)
GATE = Gate()
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("auth")
    auth = auth_process(tmp, ADMIN_KEY, INTERNAL).start(wait="/readyz")
    try:
        with UvicornThread(ollama(GATE)) as upstream:
            config = settings(
                nexus_auth_enabled=True, nexus_internal_token=INTERNAL,
                ollama_base_url=upstream.url, static_backends={"auth": auth.url},
            )  # fmt: skip
            with UvicornThread(build_app(config)) as gateway:
                wait_for_http(f"{gateway.url}/readyz", timeout_s=15)
                yield gateway.url
    finally:
        auth.stop()


def _no_client_key_upstream() -> None:
    for seen in GATE.headers:
        assert ADMIN_KEY not in str(seen)
        assert "x-api-key" not in seen
        assert "authorization" not in seen
        assert "x-nexus-subject" not in seen  # the caller's identity is for Nexus services
        assert "x-nexus-role" not in seen


def test_anthropic_sdk_with_api_key_sends_x_api_key(gw: str) -> None:
    with anthropic.Anthropic(base_url=gw, api_key=ADMIN_KEY, max_retries=0) as claude:
        message = claude.messages.create(model="llama3.2", max_tokens=32, messages=HI)  # type: ignore[arg-type]
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello there"
    _no_client_key_upstream()


def test_anthropic_sdk_with_auth_token_sends_a_bearer(gw: str) -> None:
    with anthropic.Anthropic(base_url=gw, auth_token=ADMIN_KEY, api_key=None,
                             max_retries=0) as claude:  # fmt: skip
        with claude.messages.stream(model="llama3.2", max_tokens=32, messages=HI) as stream:  # type: ignore[arg-type]
            assert "".join(stream.text_stream) == "Hello there"
    _no_client_key_upstream()


def test_a_bad_key_is_anthropics_authentication_error(gw: str) -> None:
    with anthropic.Anthropic(base_url=gw, api_key="nx-wrong", max_retries=0) as claude:
        with pytest.raises(anthropic.AuthenticationError) as raised:
            claude.messages.create(model="llama3.2", max_tokens=8, messages=HI)  # type: ignore[arg-type]
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Invalid API key."},
    }


def test_azure_style_api_key_header_and_openai_shape_elsewhere(gw: str) -> None:
    assert httpx.get(f"{gw}/v1/models", headers={"api-key": ADMIN_KEY}).status_code == 200
    refused = httpx.get(f"{gw}/v1/models", headers={"api-key": "nx-wrong"})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"  # OpenAI's envelope here
    assert httpx.get(f"{gw}/v1/aliases").status_code == 401
    assert httpx.get(f"{gw}/v1/aliases", headers={"x-api-key": ADMIN_KEY}).status_code == 200
