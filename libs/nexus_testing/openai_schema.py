"""Validate documents against OpenAI's published component schemas (JSON Schema 2020-12).

The source is OpenAI's OpenAPI document (``shared/openai-openapi.yaml`` beside the repository,
or ``NEXUS_OPENAI_SPEC``). A fresh clone has no ``shared/``, so the components Nexus checks —
and everything they reference — are also vendored in ``openai_schemas.json``
(``python scripts/vendor_openai_schemas.py`` rewrites it; a test keeps it equal to the source).
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

REPO = Path(__file__).resolve().parents[2]
VENDORED = Path(__file__).with_name("openai_schemas.json")
# The OpenAI documents Nexus produces (errors, model lists, images, speech events, usage).
CHECKED = (
    "ErrorResponse",
    "ListModelsResponse",
    "ImagesResponse",
    "SpeechAudioDeltaEvent",
    "SpeechAudioDoneEvent",
    "UsageResponse",
)


def spec_path() -> Path:
    return Path(os.environ.get("NEXUS_OPENAI_SPEC", REPO.parent / "shared" / "openai-openapi.yaml"))


def extract(components: dict[str, Any], names: tuple[str, ...] = CHECKED) -> dict[str, Any]:
    """The named schemas and every schema they reference, transitively."""
    schemas = components["schemas"]
    found: dict[str, Any] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found[name] = schemas[name]
        todo.extend(_refs(schemas[name]))
    return {"schemas": dict(sorted(found.items()))}


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = []
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            out.append(ref.rsplit("/", 1)[1])
        for value in node.values():
            out.extend(_refs(value))
        return out
    if isinstance(node, list):
        return [r for item in node for r in _refs(item)]
    return []


def load_source_components() -> dict[str, Any]:
    import yaml

    with spec_path().open("rb") as fh:
        doc = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    components: dict[str, Any] = doc["components"]
    return components


@cache
def components() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(VENDORED.read_text())
    return loaded


@cache
def _validator(component: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{component}", "components": components()}
    return jsonschema.Draft202012Validator(schema)


def assert_openai_schema(component: str, document: Any) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``document`` matches OpenAI's ``component``."""
    _validator(component).validate(document)
