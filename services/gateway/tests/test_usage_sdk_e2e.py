"""The issue's end-to-end check with the ``openai`` SDK: a key with a small TPM limit makes a
few plain and streamed chats through a real gateway (auth on, real auth and usage services as
processes, a fake LLM that says how many tokens it used), hits 429 with the token headers, and
the Usage API then reports exactly the tokens the fake upstream said it used."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from app.main import build_app
from nexus_testing import UvicornThread, wait_for_http, wait_until
from nexus_testing.openai_schema import assert_openai_schema
from tests.support import auth_process, settings, usage_process
from tests.usage_fakes import COMPLETION_TOKENS, PROMPT_TOKENS, fake_llm

pytestmark = pytest.mark.integration
ADMIN_KEY = "nx-" + secrets.token_urlsafe(32)
INTERNAL = secrets.token_urlsafe(24)
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
PER_CHAT = PROMPT_TOKENS + COMPLETION_TOKENS  # 15
TPM = 3 * PER_CHAT - 5  # room for three chats: the third takes the window past its limit
DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("usage-sdk")
    auth = auth_process(tmp, ADMIN_KEY, INTERNAL)
    usage = usage_process(tmp, INTERNAL)
    try:
        auth.start(wait="/readyz")
        usage.start(wait="/readyz")
        with UvicornThread(fake_llm()) as llm:
            config = settings(
                nexus_auth_enabled=True, nexus_internal_token=INTERNAL,
                static_backends={"auth": auth.url, "usage": usage.url, "llm": llm.url},
                usage_spool_dir=str(tmp / "spool"), usage_flush_interval_s=0.05,
            )  # fmt: skip
            with UvicornThread(build_app(config)) as gw:
                wait_for_http(f"{gw.url}/readyz", timeout_s=15)
                yield gw.url
    finally:
        usage.stop()
        auth.stop()


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.post(url, json=body, headers=ADMIN, timeout=10)
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


def test_tpm_limit_429_and_exact_usage_reported(stack: str) -> None:
    user = _post(f"{stack}/v1/users", {"username": f"u{secrets.token_hex(4)}",
                                       "password": "correct horse battery"})  # fmt: skip
    key = _post(f"{stack}/v1/api-keys", {"name": "small", "user_id": user["id"],
                                         "rate_limit_tpm": TPM})  # fmt: skip
    client = openai.OpenAI(base_url=f"{stack}/v1", api_key=key["key"], max_retries=0)
    started = int(time.time())
    try:
        first = client.chat.completions.with_raw_response.create(model="m1", messages=MESSAGES)
        assert first.headers["x-ratelimit-limit-tokens"] == str(TPM)
        assert first.headers["x-ratelimit-remaining-tokens"] == str(TPM)
        assert DURATION.match(first.headers["x-ratelimit-reset-tokens"])
        assert DURATION.match(first.headers["x-ratelimit-reset-requests"])
        assert first.parse().usage is not None
        stream = client.chat.completions.create(model="m1", messages=MESSAGES, stream=True)
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "hi there"
        assert all(c.choices for c in chunks)  # the usage chunk it did not ask for is gone
        third = client.chat.completions.with_raw_response.create(model="m1", messages=MESSAGES)
        assert third.headers["x-ratelimit-remaining-tokens"] == str(TPM - 2 * PER_CHAT)
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="m1", messages=MESSAGES, stream=True)
    finally:
        client.close()
    error = refused.value
    assert error.code == "rate_limit_exceeded"
    assert error.type == "tokens"
    assert_openai_schema("ErrorResponse", error.response.json())
    headers = error.response.headers
    assert headers["x-ratelimit-limit-tokens"] == str(TPM)
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    assert DURATION.match(headers["x-ratelimit-reset-tokens"])
    assert 1 <= int(headers["retry-after"]) <= 60
    # Not only model endpoints: every response of the key says where its tokens stand.
    models = httpx.get(f"{stack}/v1/models", headers={"Authorization": f"Bearer {key['key']}"})
    assert models.status_code == 200, models.text  # listing models costs no tokens: not refused
    assert models.headers["x-ratelimit-limit-tokens"] == str(TPM)
    assert models.headers["x-ratelimit-remaining-tokens"] == "0"
    assert DURATION.match(models.headers["x-ratelimit-reset-tokens"])

    def report() -> dict[str, Any]:
        resp = httpx.get(
            f"{stack}/v1/organization/usage/completions",
            params={"start_time": started - 60, "bucket_width": "1h", "group_by": "api_key_id"},
            headers={"Authorization": f"Bearer {key['key']}"}, timeout=10,
        )  # fmt: skip
        assert resp.status_code == 200, resp.text
        page: dict[str, Any] = resp.json()
        return page

    wait_until(lambda: sum(r["num_model_requests"] for b in report()["data"]
                           for r in b["results"]) == 3, 15, "three records")  # fmt: skip
    page = report()
    assert_openai_schema("UsageResponse", page)
    [result] = [r for b in page["data"] for r in b["results"]]
    assert result["api_key_id"] == key["id"]
    assert (result["input_tokens"], result["output_tokens"]) == (
        3 * PROMPT_TOKENS,
        3 * COMPLETION_TOKENS,
    )
    summary = httpx.get(f"{stack}/v1/usage/keys/{key['id']}",
                        headers={"Authorization": f"Bearer {key['key']}"}, timeout=10)  # fmt: skip
    assert summary.status_code == 200, summary.text
    assert summary.json()["today"]["input_tokens"] == 3 * PROMPT_TOKENS


def test_a_spent_daily_budget_is_insufficient_quota(stack: str) -> None:
    key = _post(f"{stack}/v1/api-keys", {"name": "budget", "token_budget_daily": 10})
    client = openai.OpenAI(base_url=f"{stack}/v1", api_key=key["key"], max_retries=0)
    try:
        client.chat.completions.create(model="m1", messages=MESSAGES)  # 15 > 10: admitted once
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="m1", messages=MESSAGES)
    finally:
        client.close()
    assert refused.value.code == "insufficient_quota"
    assert refused.value.type == "insufficient_quota"
    assert int(refused.value.response.headers["retry-after"]) >= 1


def test_a_user_cannot_read_another_users_key(stack: str) -> None:
    mine = _post(f"{stack}/v1/api-keys", {"name": "admin-own"})
    user = _post(f"{stack}/v1/users", {"username": f"v{secrets.token_hex(4)}",
                                       "password": "correct horse battery"})  # fmt: skip
    theirs = _post(f"{stack}/v1/api-keys", {"name": "u", "user_id": user["id"]})
    with openai.OpenAI(base_url=f"{stack}/v1", api_key=mine["key"], max_retries=0) as c:
        c.chat.completions.create(model="m1", messages=MESSAGES)
    wait_until(lambda: httpx.get(f"{stack}/v1/usage/keys/{mine['id']}", headers=ADMIN)
               .json()["total"]["requests"] == 1, 15, "the admin key's record")  # fmt: skip
    bearer = {"Authorization": f"Bearer {theirs['key']}"}
    denied = httpx.get(f"{stack}/v1/usage/keys/{mine['id']}", headers=bearer)
    assert denied.status_code == 403
    assert_openai_schema("ErrorResponse", denied.json())
    query = httpx.get(f"{stack}/v1/organization/usage/completions", headers=bearer,
                      params={"start_time": 0, "api_key_ids": mine["id"]})  # fmt: skip
    assert query.status_code == 403
