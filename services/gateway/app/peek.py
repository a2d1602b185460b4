"""Peek at a JSON request body: which ``model`` it names and whether it asks for a ``stream``.

The gateway forwards bodies byte for byte, so it only needs these two fields. A substring
search finds each key (in C, one pass; a regex anchored there reads its value) without
building the document (a long chat history stays a byte string);
when the cheap answer could be wrong (no ``{...}`` shape, the key appearing more than once,
e.g. nested in a tool schema) it falls back to one full parse with orjson, which also tells a
malformed body apart. A body the cheap path accepts but that is broken inside is left for the
upstream to reject with its own 400.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from nexus_kit import InvalidRequestError

_MODEL = re.compile(rb'"model"\s*:\s*("(?:[^"\\]|\\.)*"|null)')
_STREAM = re.compile(rb'"stream"\s*:\s*(true|false|null)')
_WS = b" \t\r\n"


@dataclass(frozen=True, slots=True)
class Peek:
    model: str | None = None
    stream: bool = False


NOTHING = Peek()


class InvalidJSONError(InvalidRequestError):
    default_code = "invalid_json"

    def __init__(self) -> None:
        super().__init__("We could not parse the JSON body of your request: it is not valid JSON.")


def peek(body: bytes) -> Peek:
    """The ``model`` and ``stream`` of a JSON object body; raises ``InvalidJSONError``."""
    stripped = body.strip(_WS)
    if stripped[:1] == b"{" and stripped[-1:] == b"}":
        models = _values(stripped, b'"model"', _MODEL)
        streams = _values(stripped, b'"stream"', _STREAM)
        if len(models) <= 1 and len(streams) <= 1:
            return Peek(_model_of(models[0]) if models else None, streams == [b"true"])
    return _parse(body)


def _values(body: bytes, key: bytes, pattern: re.Pattern[bytes]) -> list[bytes]:
    """The raw values of ``key`` at any depth; the common case (once) without a regex scan."""
    count = body.count(key)
    if count == 0:
        return []
    if count == 1:
        match = pattern.match(body, body.find(key))
        return [match.group(1)] if match else []
    return pattern.findall(body)  # also inside strings ("model" as a value): let the regex say


def _model_of(raw: bytes) -> str | None:
    if raw == b"null":
        return None
    if b"\\" not in raw:
        return raw[1:-1].decode("utf-8", "replace")
    value = orjson.loads(raw)  # escapes: let the JSON decoder do them
    return value if isinstance(value, str) else None


def _parse(body: bytes) -> Peek:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidJSONError() from None
    if not isinstance(doc, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="invalid_json")
    model = doc.get("model")
    return Peek(model if isinstance(model, str) else None, doc.get("stream") is True)
