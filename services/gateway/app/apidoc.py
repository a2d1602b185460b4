"""``GET /openapi.json``: one OpenAPI 3.1 document of everything the gateway routes right now.

Built from the routing table, not configured: every route of the current table (departed ones
left out) becomes an operation, at the path the gateway exposes (``/v1/echo`` and its alias
``/services/template/v1/echo``). The operation itself comes from

- the gateway's own routes (FastAPI's schema of them), which win over any service's;
- a Nexus service's own ``/openapi.json`` (every kit service serves one), fetched from one
  ready instance per service and version, and kept while that instance is in the table;
- for Ollama and ``kind: openai`` upstreams, OpenAI's operation for the path, from the
  subset of OpenAI's document vendored in ``openai_operations.json`` (``scripts/
  vendor_openai_operations.py`` rewrites it from ``shared/openai-openapi.yaml``);
- else a bare operation (any JSON in, the upstream's answer out).

Every operation gets bearer security (none on public endpoints) and the OpenAI error
envelope as its ``default`` response; FastAPI's 422 becomes the 400 the kit answers. Component
names that two sources define differently are prefixed with the source (``template.Item``).

The document is rebuilt on the first request after the table changes (discovery swaps the
table within a second of an etcd change) and served from cache otherwise.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from nexus_kit import get_logger
from nexus_kit.tracing import outgoing_headers, span

if TYPE_CHECKING:
    from .discovery import Instance
    from .routing import Route, RoutingTable

log = get_logger("nexus.gateway.apidoc")
OPENAI_OPERATIONS = Path(__file__).with_name("openai_operations.json")
# OpenAI operations vendored: the paths Ollama and kind=openai upstreams can serve.
OPENAI_PATHS = (
    ("post", "/chat/completions"),
    ("post", "/completions"),
    ("post", "/embeddings"),
    ("post", "/responses"),
    ("post", "/images/generations"),
    ("post", "/audio/speech"),
    ("post", "/audio/transcriptions"),
    ("get", "/models"),
    ("get", "/models/{model}"),
)
BEARER = "bearerAuth"
ERROR = "NexusError"
_FETCH_TIMEOUT_S = 3.0
_REF_PREFIXES = ("#/components/schemas/", "#/components/responses/")
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_ERROR_SCHEMA = {
    "type": "object",
    "description": "The OpenAI error envelope every Nexus error uses.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_ERROR_RESPONSE = {
    "description": "An error, in the OpenAI error envelope.",
    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR}"}}},
}


# -- the vendored OpenAI subset ------------------------------------------------------------


def extract_openai_operations(spec: dict[str, Any]) -> dict[str, Any]:
    """The vendored subset of OpenAI's document: ``OPENAI_PATHS`` and what they reference."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path in OPENAI_PATHS:
        operation = spec["paths"].get(path, {}).get(method)
        if operation is not None:
            operation = {k: v for k, v in operation.items() if k not in ("security", "x-oaiMeta")}
            paths.setdefault(path, {})[method] = operation
    components: dict[str, dict[str, Any]] = {"schemas": {}, "responses": {}}
    todo = list(_refs(paths))
    while todo:
        kind, name = todo.pop()
        if name in components[kind]:
            continue
        node = spec["components"][kind][name]
        components[kind][name] = node
        todo.extend(_refs(node))
    subset: dict[str, Any] = _repair(
        {
            "paths": paths,
            "components": {k: dict(sorted(v.items())) for k, v in components.items() if v},
        }
    )
    return subset


_JSON_TYPES = {type(None): "null", bool: "boolean", int: "integer", float: "number",
               str: "string", list: "array", dict: "object"}  # fmt: skip


def _repair(node: Any) -> Any:
    """OpenAI's document as a valid OpenAPI 3.1 one: a few ``default`` values do not fit
    their own schema (``null`` for an object, ``[]`` for a string) and one schema carries
    2019-09's ``$recursiveAnchor``; those keywords are dropped, nothing else changes."""
    if isinstance(node, dict):
        out = {k: _repair(v) for k, v in node.items() if k != "$recursiveAnchor"}
        if "default" in out and not _fits(out["default"], out):
            del out["default"]
        return out
    if isinstance(node, list):
        return [_repair(item) for item in node]
    return node


def _fits(value: Any, schema: dict[str, Any]) -> bool:
    if "enum" in schema:
        return value in schema["enum"]
    declared = schema.get("type")
    if declared is not None:
        types = declared if isinstance(declared, list) else [declared]
        kind = _JSON_TYPES.get(type(value), "object")
        return kind in types or (kind == "integer" and "number" in types)
    variants = schema.get("anyOf") or schema.get("oneOf")
    if variants:
        # A referenced schema is taken to fit, except for null (none of OpenAI's allows it).
        return any(
            (value is not None) if "$ref" in v else _fits(value, v)
            for v in variants
            if isinstance(v, dict)
        )
    return True


@cache
def openai_operations() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(OPENAI_OPERATIONS.read_text())
    return loaded


def _refs(node: Any) -> Iterable[tuple[str, str]]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            for prefix in _REF_PREFIXES:
                if ref.startswith(prefix):
                    yield prefix.split("/")[2], ref[len(prefix) :]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _rename_refs(node: Any, renamed: dict[tuple[str, str], str]) -> Any:
    if isinstance(node, dict):
        out = {k: _rename_refs(v, renamed) for k, v in node.items()}
        ref = node.get("$ref")
        if isinstance(ref, str):
            for prefix in _REF_PREFIXES:
                kind = prefix.split("/")[2]
                if ref.startswith(prefix) and (kind, ref[len(prefix) :]) in renamed:
                    out["$ref"] = prefix + renamed[(kind, ref[len(prefix) :])]
        return out
    if isinstance(node, list):
        return [_rename_refs(item, renamed) for item in node]
    return node


# -- assembling one document ---------------------------------------------------------------


class Source:
    """One document operations are taken from, with its components."""

    def __init__(self, name: str, doc: dict[str, Any], strip_v1: bool = False) -> None:
        self.name = name
        self.paths: dict[str, Any] = doc.get("paths") or {}
        self.components: dict[str, Any] = (doc.get("components") or {})
        self.strip_v1 = strip_v1  # OpenAI's paths are relative to .../v1

    def operation(self, method: str, path: str) -> dict[str, Any] | None:
        if self.strip_v1:
            if not path.startswith("/v1/"):
                return None
            path = path[3:]
        found = (self.paths.get(path) or {}).get(method.lower())
        return found if isinstance(found, dict) else None


class Builder:
    """Collects operations and components into one document, renaming clashing components."""

    def __init__(self, title: str, version: str) -> None:
        self.paths: dict[str, dict[str, Any]] = {}
        self.components: dict[str, dict[str, Any]] = {
            "schemas": {ERROR: _ERROR_SCHEMA},
            "responses": {},
            "securitySchemes": {BEARER: {"type": "http", "scheme": "bearer",
                                         "description": "A Nexus API key (nx-...) or a JWT."}},
        }  # fmt: skip
        self._renames: dict[str, dict[tuple[str, str], str]] = {}
        self._operation_ids: set[str] = set()
        self.title, self.version = title, version

    def add(self, path: str, method: str, source: Source | None, route: Route | None,
            operation: dict[str, Any] | None, public: bool, tag: str) -> None:  # fmt: skip
        method = method.lower()
        if method in self.paths.get(path, {}):
            return  # the gateway's own routes come first, then the first claim
        op = copy.deepcopy(operation) if operation is not None else _bare(route)
        if source is not None:
            op = _rename_refs(op, self._merge_components(source))
        op["tags"] = [tag]
        op["operationId"] = self._unique(str(op.get("operationId") or f"{method}{path}"), tag)
        op["security"] = [] if public else [{BEARER: []}]
        responses = op.setdefault("responses", {})
        if responses.pop("422", None) is not None:  # the kit answers validation errors 400
            responses.setdefault("400", _ERROR_RESPONSE)
        responses["default"] = _ERROR_RESPONSE
        for parameter in op.get("parameters", ()):
            if parameter.get("in") == "path":
                parameter["required"] = True
        self.paths.setdefault(path, {})[method] = op

    def _unique(self, operation_id: str, tag: str) -> str:
        candidate = operation_id
        if candidate in self._operation_ids:
            candidate = f"{tag}.{operation_id}"
        n = 2
        while candidate in self._operation_ids:
            candidate, n = f"{tag}.{operation_id}.{n}", n + 1
        self._operation_ids.add(candidate)
        return candidate

    def _merge_components(self, source: Source) -> dict[tuple[str, str], str]:
        """Copy a source's components in once; clashing names get the source's prefix."""
        if source.name in self._renames:
            return self._renames[source.name]
        renamed: dict[tuple[str, str], str] = {}
        for kind in ("schemas", "responses"):
            for name, node in (source.components.get(kind) or {}).items():
                mine = self.components[kind].get(name)
                if mine is not None and mine != node:
                    renamed[(kind, name)] = f"{source.name}.{name}"
        for kind in ("schemas", "responses"):
            for name, node in (source.components.get(kind) or {}).items():
                self.components[kind][renamed.get((kind, name), name)] = _rename_refs(
                    node, renamed
                )
        self._renames[source.name] = renamed
        return renamed

    def document(self) -> dict[str, Any]:
        return {
            "openapi": "3.1.0",
            "info": {
                "title": self.title,
                "version": self.version,
                "description": "Everything this Nexus gateway routes right now, built from the "
                "discovered services' own documents. Errors use the OpenAI error envelope.",
            },
            "servers": [{"url": "/"}],
            "security": [{BEARER: []}],
            "paths": dict(sorted(self.paths.items())),
            "components": {k: v for k, v in self.components.items() if v},
        }


def _bare(route: Route | None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": "Proxied to the upstream as it comes",
        "responses": {"200": {"description": "The upstream's answer."}},
    }
    if route is not None:
        op["operationId"] = route.operation_id
        if route.method in ("POST", "PUT", "PATCH"):
            op["requestBody"] = {"content": {"application/json": {"schema": {}}}}
        params = [s[1:-1] for s in route.path.split("/") if s.startswith("{") and s.endswith("}")]
        if params:
            op["parameters"] = [{"name": p, "in": "path", "required": True,
                                 "schema": {"type": "string"}} for p in params]  # fmt: skip
    return op


def build_document(
    table: RoutingTable,
    own: dict[str, Any],
    docs: dict[str, dict[str, Any]],  # service name -> its own /openapi.json
    public: Callable[[str, str], bool],
    version: str,
) -> dict[str, Any]:
    """The gateway's document: its own routes, then every routed one (pure)."""
    builder = Builder("Nexus gateway", version)
    own_source = Source("gateway", own)
    for path, item in own_source.paths.items():
        for method, operation in item.items():
            if method in _METHODS:
                builder.add(path, method, own_source, None, operation,
                            public(method.upper(), path), "gateway")  # fmt: skip
    openai = Source("openai", openai_operations(), strip_v1=True)
    sources: dict[str, Source] = {}
    for route in table.routes:
        if not route.targets:
            continue  # departed: answers 503 for a while, but is not routed
        instance = route.targets[0].instance
        upstream_path = route.path[route.strip :] if route.strip else route.path
        source: Source | None = None
        if instance.kind in ("ollama", "openai"):
            source = openai
        elif instance.service in docs:
            source = sources.setdefault(
                instance.service, Source(instance.service, docs[instance.service])
            )
        operation = source.operation(route.method, upstream_path) if source else None
        builder.add(route.path, route.method, source if operation else None, route,
                    operation, route.public, route.service or instance.service)  # fmt: skip
    return builder.document()


# -- serving it ------------------------------------------------------------------------------


class ApiDocument:
    """The cached document; rebuilt on the first request after the routing table changes."""

    def __init__(
        self,
        table: Callable[[], RoutingTable],
        client: Callable[[], httpx.AsyncClient],
        own: Callable[[], dict[str, Any]],
        version: str,
    ) -> None:
        self._table, self._client, self._own, self._version = table, client, own, version
        self._built_for: RoutingTable | None = None
        self._body = b""
        self._docs: dict[str, tuple[str, dict[str, Any]]] = {}  # service -> (instance key, doc)
        self._lock = asyncio.Lock()

    async def body(self) -> bytes:
        table = self._table()
        if table is self._built_for:
            return self._body
        async with self._lock:
            table = self._table()
            if table is not self._built_for:
                with span("gateway.openapi.build", attributes={"nexus.revision": table.revision}):
                    await self._fetch_missing(table)
                    docs = {service: doc for service, (_, doc) in self._docs.items()}
                    doc = build_document(
                        table, self._own(), docs, lambda m, p: _open(table, m, p), self._version
                    )
                # json, not orjson: OpenAI's document has integers past 64 bits.
                body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
                self._body, self._built_for = body, table
            return self._body

    async def _fetch_missing(self, table: RoutingTable) -> None:
        """One document per Nexus service, kept while the instance it came from is routed."""
        routed: dict[str, Instance] = {}
        for route in table.routes:
            for target in route.targets:
                if target.instance.kind == "nexus":
                    routed.setdefault(target.instance.key, target.instance)
        self._docs = {s: kd for s, kd in self._docs.items() if kd[0] in routed}
        missing: dict[str, Instance] = {}
        for instance in routed.values():
            if instance.service not in self._docs:
                missing.setdefault(instance.service, instance)
        fetched = await asyncio.gather(*(self._fetch(i) for i in missing.values()))
        for instance, doc in zip(missing.values(), fetched, strict=True):
            if doc is not None:
                self._docs[instance.service] = (instance.key, doc)

    async def _fetch(self, instance: Instance) -> dict[str, Any] | None:
        url = f"{instance.base_url}/openapi.json"
        with span("gateway.openapi.fetch", attributes={"nexus.service": instance.service}):
            try:
                resp = await self._client().get(
                    url, timeout=_FETCH_TIMEOUT_S, headers=outgoing_headers()
                )
                resp.raise_for_status()
                doc = resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("openapi document not fetched; bare operations used",
                            service=instance.service, error=type(exc).__name__)  # fmt: skip
                return None
        return doc if isinstance(doc, dict) and isinstance(doc.get("paths"), dict) else None


def _open(table: RoutingTable, method: str, path: str) -> bool:
    from .guard import OPEN_PATHS

    return path in OPEN_PATHS or table.is_public(method, path)
