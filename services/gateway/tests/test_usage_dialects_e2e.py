"""Usage end to end for the Responses API and Anthropic Messages, with the real SDKs.

A real gateway (auth on) in front of the faithful Ollama fake (``llm_fakes.ollama``: Ollama's
``/v1/responses``, plain and as named SSE events, and ``/v1/messages``, plain and streamed with
``message_start`` / ``message_delta``), real auth and usage services as processes. One key makes
``responses.create`` plain and streamed with the ``openai`` SDK, another makes
``messages.create`` plain and streamed with the ``anthropic`` SDK; the Usage API then reports
exactly the tokens the fake said it used (the fake: 1 in, 3 out per answer; a stream's
``message_start`` and ``message_delta`` both say 3 out, which is 3, not 6).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from app.main import build_app
from nexus_testing import UvicornThread, wait_for_http, wait_until
from nexus_testing.openai_schema import assert_openai_schema
from tests.llm_fakes import Gate, ollama
from tests.support import auth_process, settings, usage_process

pytestmark = pytest.mark.integration
ADMIN_KEY = "nx-" + secrets.token_urlsafe(32)
INTERNAL = secrets.token_urlsafe(24)
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
IN, OUT = 1, 3  # what the fake reports for every answer, plain or streamed


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("usage-dialects")
    auth = auth_process(tmp, ADMIN_KEY, INTERNAL)
    usage = usage_process(tmp, INTERNAL)
    try:
        auth.start(wait="/readyz")
        usage.start(wait="/readyz")
        with UvicornThread(ollama(Gate(), version="0.14.0")) as llm:
            config = settings(
                nexus_auth_enabled=True, nexus_internal_token=INTERNAL,
                ollama_base_url=llm.url, static_backends={"auth": auth.url, "usage": usage.url},
                usage_spool_dir=str(tmp / "spool"), usage_flush_interval_s=0.05,
            )  # fmt: skip
            with UvicornThread(build_app(config)) as gw:
                wait_for_http(f"{gw.url}/readyz", timeout_s=15)
                yield gw.url
    finally:
        usage.stop()
        auth.stop()


def new_key(stack: str, name: str) -> dict[str, Any]:
    user = httpx.post(f"{stack}/v1/users", headers=ADMIN, timeout=10, json={
        "username": f"f13{secrets.token_hex(4)}", "password": "correct horse battery"})  # fmt: skip
    assert user.status_code == 201, user.text
    key = httpx.post(f"{stack}/v1/api-keys", headers=ADMIN, timeout=10,
                     json={"name": name, "user_id": user.json()["id"]})  # fmt: skip
    assert key.status_code == 201, key.text
    created: dict[str, Any] = key.json()
    return created


def reported(stack: str, key: dict[str, Any], since: int, requests: int) -> dict[str, Any]:
    """The key's one result in the Usage API, once its records have all arrived."""
    bearer = {"Authorization": f"Bearer {key['key']}"}  # the owner asks, not an admin

    def page() -> dict[str, Any]:
        resp = httpx.get(f"{stack}/v1/organization/usage/completions", headers=bearer, params={
            "start_time": since - 60, "bucket_width": "1d", "group_by": ["api_key_id", "model"],
        }, timeout=10)  # fmt: skip
        assert resp.status_code == 200, resp.text
        found: dict[str, Any] = resp.json()
        return found

    wait_until(lambda: sum(r["num_model_requests"] for b in page()["data"]
                           for r in b["results"]) == requests, 15, "the records")  # fmt: skip
    document = page()
    assert_openai_schema("UsageResponse", document)
    [result] = [r for b in document["data"] for r in b["results"]]
    assert result["api_key_id"] == key["id"]
    return dict(result)


def test_responses_api_usage_is_reported_exactly(stack: str) -> None:
    key = new_key(stack, "responses")
    since = int(time.time())
    with openai.OpenAI(base_url=f"{stack}/v1", api_key=key["key"], max_retries=0) as sdk:
        plain = sdk.responses.create(model="llama3.2", input="hi")
        assert plain.output_text == "Hello there"
        assert plain.usage is not None
        assert (plain.usage.input_tokens, plain.usage.output_tokens) == (IN, OUT)
        events = list(sdk.responses.create(model="llama3.2", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == (
        "Hello there"
    )
    result = reported(stack, key, since, requests=2)
    assert result["model"] == "llama3.2"
    assert (result["input_tokens"], result["output_tokens"]) == (2 * IN, 2 * OUT)
    assert result["num_model_requests"] == 2


def test_anthropic_messages_usage_is_reported_exactly(stack: str) -> None:
    key = new_key(stack, "messages")
    since = int(time.time())
    hi: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hi"}]
    with anthropic.Anthropic(base_url=stack, api_key=key["key"], max_retries=0) as claude:
        plain = claude.messages.create(model="llama3.2", max_tokens=32, messages=hi)
        assert (plain.usage.input_tokens, plain.usage.output_tokens) == (IN, OUT)
        events = list(claude.messages.create(model="llama3.2", max_tokens=32, messages=hi,
                                             stream=True))  # fmt: skip
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert "message_delta" in kinds
    result = reported(stack, key, since, requests=2)
    assert result["model"] == "llama3.2"
    assert (result["input_tokens"], result["output_tokens"]) == (2 * IN, 2 * OUT)
    summary = httpx.get(f"{stack}/v1/usage/keys/{key['id']}", timeout=10,
                        headers={"Authorization": f"Bearer {key['key']}"})  # fmt: skip
    assert summary.status_code == 200, summary.text
    total = summary.json()["total"]
    assert (total["requests"], total["unknown_usage_requests"]) == (2, 0)
    assert (total["input_tokens"], total["output_tokens"]) == (2 * IN, 2 * OUT)
