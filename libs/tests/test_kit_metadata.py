"""Metadata schema v1: the pydantic models accept the DESIGN example and refuse bad documents."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from nexus_kit.metadata import ServiceMetadata, metadata_json_schema

DESIGN_EXAMPLE: dict[str, Any] = {
    "schema_version": "v1",
    "service": {"name": "tts", "version": "1.0.0", "description": "...", "instance_id": "tts-1a2b"},
    "capabilities": {"domains": ["audio"], "modalities": ["audio"], "streaming": True},
    "endpoints": [
        {"path": "/v1/audio/speech", "method": "POST", "operation_id": "audio.speech",
         "streaming": True}
    ],
    "models": [{"id": "tts-1", "owned_by": "nexus-tts"}],
    "options": {"voices": ["alloy"], "response_formats": ["wav", "mp3"]},
    "resources": {"cpu": "2", "memory": "4Gi", "gpu": "nvidia-gpu", "gpu_memory": "8Gi"},
}


def test_design_example_is_valid() -> None:
    doc = ServiceMetadata.model_validate(DESIGN_EXAMPLE)
    assert doc.endpoints[0].streaming is True
    jsonschema.Draft202012Validator(metadata_json_schema()).validate(DESIGN_EXAMPLE)


def test_minimal_document() -> None:
    minimal = {
        "schema_version": "v1",
        "service": {"name": "x", "version": "1"},
        "capabilities": {},
        "endpoints": [{"path": "/v1/api-keys/{id}", "method": "delete", "operation_id": "k.del"}],
    }
    doc = ServiceMetadata.model_validate(minimal)
    assert doc.endpoints[0].method == "DELETE"
    assert doc.models == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(schema_version="v2"),
        lambda d: d.pop("endpoints"),
        lambda d: d.pop("capabilities"),
        lambda d: d["service"].pop("version"),
        lambda d: d["service"].update(name="Has Spaces"),
        lambda d: d["endpoints"][0].update(path="no-leading-slash"),
        lambda d: d["endpoints"][0].update(path="/v1/{bad param}"),
        lambda d: d["endpoints"][0].update(method="FETCH"),
        lambda d: d["endpoints"][0].pop("operation_id"),
    ],
)
def test_invalid_documents_are_refused(mutate: Any) -> None:
    import copy

    doc = copy.deepcopy(DESIGN_EXAMPLE)
    mutate(doc)
    with pytest.raises(ValidationError):
        ServiceMetadata.model_validate(doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(metadata_json_schema()).validate(doc)
