"""Model names as routing sees them: ``GET /v1/models/{id}`` and the aliases in ``/v1/models``.

``retrieve`` answers for exactly the names a request may use: every id a route's target
accepts (Ollama's ``llama3.2`` for ``llama3.2:latest`` included, ``kinds.py``) and every
alias. ``/v1/models`` lists what is servable now: models of ready instances, and each alias
with at least one such model.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from nexus_kit import ModelNotFoundError

if TYPE_CHECKING:
    from .discovery import Instance
    from .state import GatewayState

ALIAS_OWNER = "nexus-alias"


def retrieve(state: GatewayState, model: str) -> dict[str, Any]:
    """The model object for a name routing accepts; ``ModelNotFoundError`` otherwise."""
    aliased = state.aliases.get(model)
    if aliased is not None:
        return _object(model, ALIAS_OWNER, None)
    for route in state.table.routes:
        for target in route.targets:
            if model in target.models:
                return _object(model, _owner(target.instance, model), target.instance)
    raise ModelNotFoundError(model)


def alias_models(state: GatewayState, listed: set[str]) -> list[dict[str, Any]]:
    """An object per alias (not already ``listed``) with a model a ready instance serves."""
    servable = _servable(state)
    return [
        _object(alias, ALIAS_OWNER, None)
        for alias, models in sorted(state.aliases.table.items())
        if alias not in listed and any(m in servable for m in models)
    ]


def _servable(state: GatewayState) -> set[str]:
    """Every model name a ready instance accepts (``llama3.2`` for ``llama3.2:latest`` too)."""
    names: set[str] = set()
    for route in state.table.routes:
        for target in route.targets:
            if state.upstreams.describe(target.instance) == "ready":
                names |= target.models
    return names


def _owner(instance: Instance, model: str) -> str:
    for info in instance.metadata.models if instance.metadata else ():
        if info.id == model or info.id == f"{model}:latest":
            return info.owned_by
    return instance.service


def _object(model: str, owner: str, instance: Instance | None) -> dict[str, Any]:
    created = int(instance.seen_at) if instance is not None and instance.seen_at else None
    if instance is not None and instance.metadata is not None:
        for info in instance.metadata.models:
            value = getattr(info, "created", None)
            if info.id in (model, f"{model}:latest") and isinstance(value, int):
                created = value
    return {"id": model, "object": "model", "created": created or int(time.time()),
            "owned_by": owner}  # fmt: skip
