"""End to end with the ``openai`` SDK through the gateway to an Ollama-compatible upstream."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.servers import ollama_and_gateway
from tests.support import OllamaScript

pytestmark = pytest.mark.integration
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def script() -> OllamaScript:
    return OllamaScript()


@pytest.fixture(scope="module")
def client(script: OllamaScript) -> Iterator[openai.OpenAI]:
    with ollama_and_gateway(script) as (_, gw, _):
        with openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0) as sdk:
            yield sdk


@pytest.fixture(autouse=True)
def fresh_script(script: OllamaScript) -> None:
    script.release.clear()
    script.released_in_time = None


def test_models_list(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert ids == {"llama3.2:latest", "nomic-embed:latest", "ghost:latest", "picky:latest"}


def test_chat_completion(client: openai.OpenAI, script: OllamaScript) -> None:
    reply = client.chat.completions.create(model="llama3.2", messages=MESSAGES)
    assert reply.choices[0].message.content == "Hello there"
    assert script.seen_request_ids[-1]  # X-Request-ID reached the upstream


def test_chat_stream_chunks_arrive_as_produced(client: openai.OpenAI, script: OllamaScript) -> None:
    stream = client.chat.completions.create(model="llama3.2", messages=MESSAGES, stream=True)
    pieces = []
    for chunk in stream:
        script.release.set()  # the fake holds everything after its first chunk until now
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert script.released_in_time is True, (
        "the first chunk did not arrive before the last was sent"
    )
    assert "".join(pieces) == "Hello there"


def test_chat_stream_ends_with_done(client: openai.OpenAI, script: OllamaScript) -> None:
    script.release.set()
    with client.chat.completions.with_streaming_response.create(
        model="llama3.2",
        messages=MESSAGES,
        stream=True,
    ) as resp:
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert len(events) == 5


def test_embeddings(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="nomic-embed", input="hi")
    assert result.data[0].embedding == [0.1, 0.2, 0.3]


@pytest.mark.parametrize("model", ["gpt-9", "ghost"])
def test_unknown_model_raises_not_found(client: openai.OpenAI, model: str) -> None:
    # gpt-9: no instance lists it; ghost: Ollama lists it but answers its own 404.
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model=model, messages=MESSAGES)
    assert caught.value.code == "model_not_found"
