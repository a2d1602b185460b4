"""Upstream kinds: one module per kind of server the gateway writes metadata for, one contract.

``nexus`` services describe themselves (``/v1/metadata``, ``/readyz``) and need nothing here.
The others (``ollama.py``, ``openai_upstream.py``) implement ``UpstreamKind`` as module-level
functions; discovery, the prober and routing ask ``KINDS`` instead of testing names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import httpx

from nexus_kit import CheckResult, ServiceMetadata

from . import ollama, openai_upstream

if TYPE_CHECKING:
    from .discovery import Instance


class UpstreamKind(Protocol):
    def placeholder(self, instance: Instance, version: str = ...) -> ServiceMetadata:
        """Metadata before the first answer: endpoints, no models (requests get 503)."""
        ...

    async def fetch_metadata(self, http: httpx.AsyncClient, instance: Instance) -> ServiceMetadata:
        """The synthesized metadata, models included (raises on failure; retried)."""
        ...

    async def probe(self, http: httpx.AsyncClient, instance: Instance) -> CheckResult:
        """Whether the instance can serve now."""
        ...

    def model_aliases(self, model_id: str) -> tuple[str, ...]:
        """Every name under which a request may name this model."""
        ...


KINDS: dict[str, UpstreamKind] = {"ollama": ollama, "openai": openai_upstream}


def synthesized(kind: str) -> UpstreamKind | None:
    """The kind's implementation, or None for a Nexus service (which describes itself)."""
    return KINDS.get(kind)
