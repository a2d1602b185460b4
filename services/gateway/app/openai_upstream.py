"""Upstreams of ``kind: openai``: any server that speaks the OpenAI HTTP API.

vLLM, llama.cpp's server, LM Studio, SGLang, TGI, LocalAI or a hosted API: none serves
``/v1/metadata``, so the gateway writes one (like Ollama's, ``ollama.py``):

- models: ``GET /v1/models`` (the OpenAI list; extra fields such as vLLM's ``max_model_len``
  or llama.cpp's ``meta`` are ignored), re-read every ``OLLAMA_REFRESH_S``;
- health: ``GET /health`` where the server has one (vLLM, llama.cpp: 503 while a model
  loads), else ``GET /v1/models`` (a 404 or 405 from ``/health`` means "no such endpoint");
- endpoints: ``DEFAULT_PATHS``, or the registration's ``paths`` (narrow or extend).

The base URL is the server's root; a trailing ``/v1`` (as the openai SDK spells base URLs) is
dropped, because the client's path (``/v1/chat/completions``) is appended as it comes.

An upstream credential (hosted APIs) is the value of a gateway env var: the one the
registration names in ``api_key_env`` (always ``NEXUS_UPSTREAM_KEY_*``, so an etcd value can
never point at the gateway's other secrets), or ``NEXUS_UPSTREAM_KEY_<NAME>`` for a static
upstream. It is sent as ``Authorization: Bearer``; the client's own credentials never are
(``forward_headers``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import httpx

from nexus_kit import Capabilities, CheckResult, Endpoint, ModelInfo, ServiceMetadata
from nexus_kit.metadata import ServiceInfo

if TYPE_CHECKING:
    from .discovery import Instance

KEY_ENV_PREFIX = "NEXUS_UPSTREAM_KEY_"
# path -> (operation id, streaming); the default set is the first four.
KNOWN: dict[str, tuple[str, bool]] = {
    "/v1/chat/completions": ("chat.completions", True),
    "/v1/completions": ("completions", True),
    "/v1/embeddings": ("embeddings", False),
    "/v1/responses": ("responses", True),
    "/v1/messages": ("messages", True),
    # Anthropic's token count (Claude Code calls it); no Ollama serves it: docs/upstreams.md
    "/v1/messages/count_tokens": ("messages.count_tokens", False),
    "/v1/images/generations": ("images.generate", False),
    "/v1/audio/speech": ("audio.speech", True),
    "/v1/audio/transcriptions": ("audio.transcriptions", False),
    "/v1/rerank": ("rerank", False),
    "/v1/score": ("score", False),
}
DEFAULT_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
# The client's credentials, in every spelling the gateway accepts: never sent upstream.
CLIENT_CREDENTIALS = frozenset({"authorization", "x-api-key", "api-key"})
# Not for a server outside Nexus either (a hosted API, Ollama): the caller's identity the guard
# adds for Nexus services, and whatever cookies a browser holds for the gateway's origin.
NEXUS_ONLY = CLIENT_CREDENTIALS | {"x-nexus-subject", "x-nexus-role", "cookie"}


class MissingCredentialError(RuntimeError):
    """The upstream's key variable is named but not set in the gateway's environment."""


def root_url(url: str) -> str:
    """``https://api.example.com/v1/`` -> ``https://api.example.com`` (paths keep their /v1)."""
    url = url.rstrip("/")
    return url.removesuffix("/v1")


def key_env_for(service: str) -> str:
    """The credential variable of a static upstream: ``my-api`` -> ``NEXUS_UPSTREAM_KEY_MY_API``."""
    return KEY_ENV_PREFIX + service.upper().replace("-", "_")


def credential(instance: Instance) -> str | None:
    """The upstream key, or None when the upstream needs none."""
    name = instance.credential_env
    if not name:
        return None
    value = os.environ.get(name, "").strip()
    if not value:
        if instance.source == "env":
            return None  # a static upstream without a key: it needs none
        raise MissingCredentialError(f"{name} is not set in the gateway's environment")
    return value


def forward_headers(instance: Instance, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The request headers for a synthesized upstream: the client's credentials, identity and
    cookies out, the upstream's key in."""
    kept = [(n, v) for n, v in headers if n not in NEXUS_ONLY]
    if instance.kind == "openai":
        key = credential(instance)
        if key is not None:
            kept.append(("authorization", f"Bearer {key}"))
    return kept


def _auth(instance: Instance) -> dict[str, str]:
    key = credential(instance)
    return {"Authorization": f"Bearer {key}"} if key else {}


def placeholder(instance: Instance, version: str = "unknown") -> ServiceMetadata:
    """Metadata before the first model list: the endpoints alone (requests get 503)."""
    return _describe(instance, version, [])


async def fetch_metadata(http: httpx.AsyncClient, instance: Instance) -> ServiceMetadata:
    resp = await http.get(f"{instance.base_url}/v1/models", headers=_auth(instance))
    resp.raise_for_status()
    doc = resp.json()
    items = doc.get("data", []) if isinstance(doc, dict) else []
    models = [_model(item, instance.service) for item in items if _id(item)]
    return _describe(instance, "unknown", models)


async def probe(http: httpx.AsyncClient, instance: Instance) -> CheckResult:
    resp = await http.get(f"{instance.base_url}/health", headers=_auth(instance))
    if resp.status_code in (404, 405):  # no /health here: the model list answers instead
        resp = await http.get(f"{instance.base_url}/v1/models", headers=_auth(instance))
    return CheckResult(resp.status_code == 200, None if resp.is_success else f"{resp.status_code}")


def model_aliases(model_id: str) -> tuple[str, ...]:
    return (model_id,)


def endpoints(paths: tuple[str, ...] | None) -> list[Endpoint]:
    """The registration's paths (``"/v1/x"`` is a POST, ``"GET /v1/x"`` names the method)."""
    found = []
    for spec in paths if paths is not None else DEFAULT_PATHS:
        method, _, path = spec.strip().rpartition(" ")
        op, streaming = KNOWN.get(path, (f"openai{path.replace('/', '.')}", True))
        found.append(
            Endpoint(path=path, method=(method or "POST").upper(), operation_id=op,  # type: ignore[arg-type]
                     streaming=streaming)
        )  # fmt: skip
    return found


def _describe(instance: Instance, version: str, models: list[ModelInfo]) -> ServiceMetadata:
    return ServiceMetadata(
        service=ServiceInfo(
            name=instance.service,
            version=version,
            description="OpenAI-compatible server (metadata synthesized by the gateway)",
            instance_id=instance.instance_id,
        ),
        capabilities=Capabilities(domains=["text"], modalities=["text"], streaming=True),
        endpoints=endpoints(instance.paths),
        models=models,
    )


def _id(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    value = item.get("id")
    return value if isinstance(value, str) and value else None


def _model(item: dict[str, Any], service: str) -> ModelInfo:
    owner = item.get("owned_by")
    created = item.get("created")
    extra = {"created": created} if isinstance(created, int) else {}
    return ModelInfo(id=_id(item) or "", owned_by=owner if isinstance(owner, str) else service,
                     **extra)  # fmt: skip
