"""Metadata schema v1: the discovery document every service serves at ``GET /v1/metadata``.

This module is the one definition of the schema; SERVICE_API_SPECIFICATION.md embeds the JSON
Schema generated from it (``metadata_json_schema``) and a test keeps the two equal.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION: Literal["v1"] = "v1"

# Standard operation ids the gateway knows by name (others are routed all the same).
STANDARD_OPERATIONS = (
    "chat.completions",
    "completions",
    "embeddings",
    "models.list",
    "images.generate",
    "audio.speech",
)

# An absolute path whose segments are literal or a whole-segment ``{param}``.
_SEGMENT = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@-]+|\{[A-Za-z_][A-Za-z0-9_]*\})"
PATH_PATTERN = rf"^(?:/{_SEGMENT})+/?$|^/$"


class _Model(BaseModel):
    # Unknown fields are kept so newer services can add to v1 without breaking old gateways.
    model_config = ConfigDict(extra="allow")


class ServiceInfo(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    version: str = Field(min_length=1)
    description: str = ""
    instance_id: str | None = None


class Capabilities(_Model):
    domains: list[str] = Field(default_factory=list)
    modalities: list[str] = Field(default_factory=list)
    streaming: bool = False


class Endpoint(_Model):
    path: str = Field(pattern=PATH_PATTERN)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    operation_id: str = Field(min_length=1)
    streaming: bool = False
    public: bool = False
    summary: str | None = None

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class ModelInfo(_Model):
    id: str = Field(min_length=1)
    owned_by: str = "nexus"


class Resources(_Model):
    cpu: str | None = None
    memory: str | None = None
    gpu: str | None = None
    gpu_memory: str | None = None


class ServiceMetadata(_Model):
    schema_version: Literal["v1"] = SCHEMA_VERSION
    service: ServiceInfo
    capabilities: Capabilities
    endpoints: list[Endpoint]
    models: list[ModelInfo] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)
    resources: Resources | None = None


def metadata_json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of the metadata document."""
    schema = ServiceMetadata.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://nexus.local/schemas/metadata-v1.json"
    required = set(schema.get("required", []))
    schema["required"] = sorted(required | {"schema_version"})
    return schema


class Registration(_Model):
    """The JSON value stored at ``<prefix><name>/<instance-id>`` (or ``<prefix><name>``)."""

    name: str
    instance_id: str | None = None
    base_url: str
    metadata_url: str | None = None
    version: str | None = None
    kind: Literal["nexus", "ollama", "openai"] = "nexus"
    draining: bool = False
    # kind "openai" only: the gateway env var holding the upstream's key (never the key itself;
    # must start with NEXUS_UPSTREAM_KEY_), and the paths it serves instead of the default set
    # (``"/v1/rerank"`` is a POST; ``"GET /v1/x"`` names the method).
    api_key_env: str | None = Field(None, pattern=r"^NEXUS_UPSTREAM_KEY_[A-Z0-9_]+$")
    paths: list[str] | None = Field(None, max_length=100)
