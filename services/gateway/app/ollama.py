"""Ollama backends (``kind: ollama``): Ollama serves no ``/v1/metadata``, so the gateway writes one.

Endpoints are Ollama's OpenAI- and Anthropic-compatible ones that the running version serves
(``GET /api/version``, table ``SINCE`` below, docs/upstreams.md); models come from
``GET /api/tags`` (refreshed by discovery every ``OLLAMA_REFRESH_S``); health is
``GET /api/version``. Until the first answer an instance has the base endpoints and no models,
so requests to a stopped Ollama get 503 (no ready instance) rather than 404 (no such path).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx

from nexus_kit import Capabilities, CheckResult, Endpoint, ModelInfo, ServiceMetadata
from nexus_kit.metadata import ServiceInfo

if TYPE_CHECKING:
    from .discovery import Instance

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")

OWNER = "ollama"
BASE_ENDPOINTS = (
    Endpoint(
        path="/v1/chat/completions",
        method="POST",
        operation_id="chat.completions",
        streaming=True,
    ),
    Endpoint(path="/v1/completions", method="POST", operation_id="completions", streaming=True),
    Endpoint(path="/v1/embeddings", method="POST", operation_id="embeddings"),
)
# Paths newer than the oldest Ollama we support, with the first version that serves them.
SINCE = (
    ((0, 13, 3), Endpoint(path="/v1/responses", method="POST", operation_id="responses",
                          streaming=True)),
    ((0, 14, 0), Endpoint(path="/v1/messages", method="POST", operation_id="messages",
                          streaming=True)),
)  # fmt: skip
ENDPOINTS = BASE_ENDPOINTS + tuple(e for _, e in SINCE)  # what the newest version serves


def placeholder(instance: Instance, version: str = "unknown") -> ServiceMetadata:
    """Metadata before (or without) a model list: the endpoints alone."""
    return _describe(instance, version, [])


async def fetch_metadata(http: httpx.AsyncClient, instance: Instance) -> ServiceMetadata:
    """Synthesized metadata: models from ``/api/tags``, version from ``/api/version``."""
    tags = await http.get(f"{instance.base_url}/api/tags")
    tags.raise_for_status()
    version = await http.get(f"{instance.base_url}/api/version")
    version.raise_for_status()
    models = [_model(item) for item in tags.json().get("models", []) if _name(item)]
    return _describe(instance, str(version.json().get("version", "unknown")), models)


async def probe(http: httpx.AsyncClient, instance: Instance) -> CheckResult:
    resp = await http.get(f"{instance.base_url}/api/version")
    return CheckResult(resp.status_code == 200, None if resp.is_success else f"{resp.status_code}")


def model_aliases(model_id: str) -> tuple[str, ...]:
    """Ollama resolves ``llama3.2`` to ``llama3.2:latest``; accept both names."""
    if model_id.endswith(":latest"):
        return (model_id, model_id.removesuffix(":latest"))
    return (model_id,)


def endpoints_for(version: str) -> list[Endpoint]:
    """The compatible endpoints Ollama ``version`` serves (a dev build, ``0.0.0``: all)."""
    found = _version_tuple(version)
    if found is None:
        return list(BASE_ENDPOINTS)
    if found == (0, 0, 0):
        return list(ENDPOINTS)
    return [*BASE_ENDPOINTS, *(e for since, e in SINCE if found >= since)]


def _version_tuple(version: str) -> tuple[int, int, int] | None:
    match = _VERSION.match(version)
    if match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def _describe(instance: Instance, version: str, models: list[ModelInfo]) -> ServiceMetadata:
    return ServiceMetadata(
        service=ServiceInfo(
            name=instance.service,
            version=version,
            description="Ollama (metadata synthesized by the gateway)",
            instance_id=instance.instance_id,
        ),
        capabilities=Capabilities(domains=["text"], modalities=["text"], streaming=True),
        endpoints=endpoints_for(version),
        models=models,
    )


def _name(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    name = item.get("name") or item.get("model")
    return name if isinstance(name, str) and name else None


def _model(item: dict[str, Any]) -> ModelInfo:
    created = _epoch(item.get("modified_at"))
    extra = {"created": created} if created is not None else {}
    return ModelInfo(id=_name(item) or "", owned_by=OWNER, **extra)


def _epoch(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value).timestamp())
    except ValueError:
        return None
