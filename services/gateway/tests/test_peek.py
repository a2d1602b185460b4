"""Peeking ``model`` and ``stream`` out of a JSON body without re-serialising it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.peek import InvalidJSONError, Peek, peek
from nexus_kit import InvalidRequestError


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"model": "llama3", "messages": []}', Peek("llama3", False)),
        (b' \n{"stream":true,"model":"m"}\n', Peek("m", True)),
        (b'{"model": "m", "stream": false}', Peek("m", False)),
        (b'{"messages": []}', Peek(None, False)),
        (b'{"model": null}', Peek(None, False)),
        (b'{"model": "caf\\u00e9 \\"x\\""}', Peek('café "x"', False)),
        # A string mentioning the key is escaped, so it is never mistaken for it.
        (b'{"messages": [{"content": "{\\"model\\": \\"evil\\"}"}], "model": "good"}',
         Peek("good", False)),
    ],
)  # fmt: skip
def test_peek_finds_model_and_stream(body: bytes, expected: Peek) -> None:
    assert peek(body) == expected


def test_nested_model_keys_fall_back_to_a_full_parse() -> None:
    body = b'{"tools": [{"parameters": {"model": "nested"}}], "model": "top", "stream": true}'
    assert peek(body) == Peek("top", True)


def test_common_bodies_are_not_fully_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hot path reads two fields with a regex; a full JSON parse is only the fallback."""

    def no_parse(_: Any) -> Any:
        raise AssertionError("full parse on the fast path")

    monkeypatch.setattr(orjson, "loads", no_parse)
    body = b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    assert peek(body) == Peek("m", True)


@pytest.mark.parametrize("body", [b"not json", b'{"model": "x",', b"{", b""])
def test_malformed_json_is_invalid_json(body: bytes) -> None:
    with pytest.raises(InvalidJSONError) as caught:
        peek(body)
    assert caught.value.status_code == 400
    assert caught.value.code == "invalid_json"


def test_a_non_object_body_is_rejected() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        peek(b"[1, 2]")
    assert caught.value.code == "invalid_json"
