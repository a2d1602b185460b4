"""The routing table: ``(method, path)`` to the instances that serve it, built from a snapshot.

``build_routing_table(snapshot)`` is pure; the result is immutable and swapped in whole, so a
request resolves against exactly one table from start to end. What changes per request (who
is in flight, ejected or failing probes) lives in ``upstreams.Upstreams``; ``Balancer``
combines the two.

Rules:

- A path may hold ``{param}`` segments, each matching one segment; literal paths win over
  patterns, and patterns with fewer params win over those with more.
- Every path a service advertises also answers at ``/services/<name><path>``, sent to that
  service only, so two services that advertise the same path stay addressable.
- On a shared path, a body ``model`` narrows the candidates to the instances that advertise it
  (instances that advertise no models at all take any model). Without a model to decide, the
  service that claimed the path first (oldest etcd key; static backends first) serves it.
- Draining instances are never candidates; their in-flight requests finish.
- The OpenAI surface always exists, so with nothing behind it a request gets 503, not 404.
- A route whose last instance left stays in the table, without targets and with its flags
  (``public`` included), until ``gone_until`` (``departed.py``): 503, not 404 ``unknown_url``.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from nexus_kit import MethodNotAllowedError, ModelNotFoundError, NotFoundError
from nexus_kit.errors import quote_input

from .discovery import Instance, Snapshot
from .kinds import synthesized
from .paths import ALIAS_PREFIX, is_param_segment, unknown_url
from .upstreams import Upstreams

# (method, path, operation id, streaming): answered even while nothing serves them.
OPENAI_SURFACE = (
    ("POST", "/v1/chat/completions", "chat.completions", True),
    ("POST", "/v1/completions", "completions", True),
    ("POST", "/v1/embeddings", "embeddings", False),
    ("POST", "/v1/images/generations", "images.generate", False),
    ("POST", "/v1/audio/speech", "audio.speech", True),
    ("POST", "/v1/responses", "responses", True),
    ("POST", "/v1/messages", "messages", True),
)
# Operations that may wait on a model load: they get the long first-byte timeout.
MODEL_OPERATIONS = frozenset(op for _, _, op, _ in OPENAI_SURFACE)


@dataclass(frozen=True, slots=True)
class Target:
    instance: Instance
    models: frozenset[str]  # advertised model ids (with Ollama's short aliases)

    @property
    def key(self) -> str:
        return self.instance.key


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str  # the template as the client addresses it (alias prefix included)
    operation_id: str
    streaming: bool = False
    public: bool = False
    slow: bool = False  # may wait on a model load: long first-byte timeout
    service: str | None = None  # set on /services/<name>/... aliases
    strip: int = 0  # characters of the alias prefix to drop before forwarding
    targets: tuple[Target, ...] = ()  # in service claim order; never draining
    gone_until: float = 0.0  # monotonic; set on a departed route (no targets) kept for 503s

    @property
    def has_models(self) -> bool:
        return any(t.models for t in self.targets)


@dataclass(frozen=True, slots=True)
class _Pattern:
    segments: tuple[str | None, ...]  # None matches any one segment
    routes: Mapping[str, Route]  # by method


@dataclass(frozen=True)
class RoutingTable:
    snapshot: Snapshot
    exact: Mapping[str, Mapping[str, Route]]  # path -> method -> route
    patterns: Mapping[int, tuple[_Pattern, ...]]  # segment count -> patterns, best first
    routes: tuple[Route, ...] = field(default=())

    @property
    def revision(self) -> int:
        return self.snapshot.revision

    def resolve(self, method: str, path: str) -> Route:
        """The route for a request; ``NotFoundError`` / ``MethodNotAllowedError`` otherwise."""
        by_method = self.exact.get(path) or self._match_pattern(path)
        if by_method is None:
            raise unknown_url(method, path)
        route = by_method.get(method)
        if route is None:
            allowed = ", ".join(sorted(by_method))
            raise MethodNotAllowedError(
                f"Method {quote_input(method, 16)} is not allowed for {quote_input(path)}.",
                headers={"Allow": allowed},
            )
        if route.gone_until and time.monotonic() >= route.gone_until:
            raise unknown_url(method, path)  # departed long enough ago: forgotten
        return route

    def _match_pattern(self, path: str) -> Mapping[str, Route] | None:
        parts = path.split("/")
        for pattern in self.patterns.get(len(parts), ()):
            if all(s is None or s == p for s, p in zip(pattern.segments, parts, strict=True)):
                # A {param} is one real segment: never empty, never '.' or '..' (paths.py).
                if all(_is_param(parts[i]) for i, s in enumerate(pattern.segments) if s is None):
                    return pattern.routes
        return None

    def is_public(self, method: str, path: str) -> bool:
        """Whether the endpoint a request targets is marked ``public`` (no bearer needed)."""
        try:
            return self.resolve(method, path).public
        except (NotFoundError, MethodNotAllowedError):
            return False

    @property
    def public_endpoints(self) -> frozenset[tuple[str, str]]:
        """``(method, path template)`` of every public endpoint, aliases included."""
        return frozenset((r.method, r.path) for r in self.routes if r.public)


_is_param = is_param_segment
EMPTY_TABLE = RoutingTable(Snapshot(0, (), False), {}, {})


def candidates(route: Route, model: str | None) -> tuple[Target, ...]:
    """The targets that may serve a request for ``model``; ``ModelNotFoundError`` if none."""
    targets = route.targets
    if model is not None and route.has_models:
        serving = tuple(t for t in targets if model in t.models)
        serving = serving or tuple(t for t in targets if not t.models)
        if not serving:
            raise ModelNotFoundError(model)
        return serving
    if route.service is None and targets:
        first = targets[0].instance.service
        return tuple(t for t in targets if t.instance.service == first)
    return targets


class Balancer:
    """Least in-flight among available candidates; ties broken by rotation.

    When every candidate is out, one that was only ejected (failures, probe passing) is
    still picked: ejection moves load to healthy peers, it never empties a route."""

    def __init__(self, upstreams: Upstreams) -> None:
        self.upstreams = upstreams
        self._turn = itertools.count()

    def pick(self, targets: tuple[Target, ...], exclude: Iterable[str] = ()) -> Target | None:
        if not targets:
            return None
        now = time.monotonic()
        states = self.upstreams.states
        start = next(self._turn) % len(targets)
        best: Target | None = None
        best_load = 0
        ejected: Target | None = None  # probe passing, passively ejected: a last resort
        ejected_load = 0
        for target in targets[start:] + targets[:start]:
            if target.key in exclude:
                continue
            state = states.get(target.key)
            load = 0 if state is None else state.in_flight
            if state is not None and not state.available(now):
                if state.probe_ok and (ejected is None or load < ejected_load):
                    ejected, ejected_load = target, load
                continue
            if best is None or load < best_load:
                best, best_load = target, load
        return best if best is not None else ejected


# -- building ---------------------------------------------------------------------------


def build_routing_table(
    snapshot: Snapshot, departed: Mapping[tuple[str, str], Route] | None = None
) -> RoutingTable:
    """The immutable table for one snapshot (pure: no I/O, no clock).

    ``departed``: routes whose last instance left (``departed.py``), kept without targets
    where the snapshot no longer serves them."""
    usable = [i for i in snapshot.instances if i.metadata is not None]
    order = _claim_order(usable)
    usable.sort(key=lambda i: (order[i.service], i.key))
    shared: dict[tuple[str, str], list[tuple[Instance, _Flags]]] = defaultdict(list)
    for method, path, _, _ in OPENAI_SURFACE:
        shared.setdefault((method, path), [])  # exists even with no instance behind it
    routes = []
    for instance in usable:
        for method, path, flags in _endpoints(instance):
            shared[(method, path)].append((instance, flags))
    for (method, path), found in shared.items():
        routes.append(_route(method, path, found, service=None))
        for service, group in itertools.groupby(found, key=lambda f: f[0].service):
            alias = f"{ALIAS_PREFIX}{service}{path}"
            routes.append(_route(method, alias, list(group), service=service))
    if departed:
        routes = _with_departed(routes, departed)
    return _index(snapshot, routes)


def _with_departed(routes: list[Route], departed: Mapping[tuple[str, str], Route]) -> list[Route]:
    served = {(r.method, r.path) for r in routes if r.targets}
    kept = [r for r in routes if r.targets or (r.method, r.path) not in departed]
    return kept + [r for k, r in departed.items() if k not in served]


@dataclass(frozen=True, slots=True)
class _Flags:
    operation_id: str
    streaming: bool
    public: bool


def _endpoints(instance: Instance) -> Iterable[tuple[str, str, _Flags]]:
    assert instance.metadata is not None
    for e in instance.metadata.endpoints:
        yield e.method, e.path, _Flags(e.operation_id, e.streaming, e.public)


def _claim_order(instances: list[Instance]) -> dict[str, tuple[int, str]]:
    """Who serves a path several services advertise: static backends first, then services by
    name. Never by registration order, which restarts reshuffle (docs: "Shared paths")."""
    return {i.service: (0 if i.source == "env" else 1, i.service) for i in instances}


def _route(
    method: str, path: str, found: list[tuple[Instance, _Flags]], service: str | None
) -> Route:
    ops = [f.operation_id for _, f in found]
    op = ops[0] if ops else next(o for m, p, o, _ in OPENAI_SURFACE if (m, p) == (method, path))
    streaming = any(f.streaming for _, f in found) or any(
        (m, p, s) == (method, path, True) for m, p, _, s in OPENAI_SURFACE
    )
    return Route(
        method=method,
        path=path,
        operation_id=op,
        streaming=streaming,
        # Public only when every advertiser says so: one private claim keeps it guarded.
        public=bool(found) and all(f.public for _, f in found),
        slow=op in MODEL_OPERATIONS or any(i.kind != "nexus" for i, _ in found),
        service=service,
        strip=len(ALIAS_PREFIX) + len(service) if service else 0,
        targets=tuple(_target(i) for i, _ in found if not i.draining),
    )


def _target(instance: Instance) -> Target:
    assert instance.metadata is not None
    ids = [m.id for m in instance.metadata.models]
    kind = synthesized(instance.kind)
    if kind is not None:
        ids = [alias for model_id in ids for alias in kind.model_aliases(model_id)]
    return Target(instance, frozenset(ids))


def _index(snapshot: Snapshot, routes: list[Route]) -> RoutingTable:
    exact: dict[str, dict[str, Route]] = defaultdict(dict)
    templated: dict[tuple[str | None, ...], dict[str, Route]] = defaultdict(dict)
    for route in routes:
        if "{" in route.path:
            segments = tuple(None if s.startswith("{") else s for s in route.path.split("/"))
            templated[segments][route.method] = route
        else:
            exact[route.path][route.method] = route
    patterns: dict[int, list[_Pattern]] = defaultdict(list)
    for segments, by_method in templated.items():
        patterns[len(segments)].append(_Pattern(segments, by_method))
    ranked = {
        n: tuple(
            sorted(group, key=lambda p: (p.segments.count(None), [s is None for s in p.segments]))
        )
        for n, group in patterns.items()
    }
    return RoutingTable(snapshot, dict(exact), ranked, tuple(routes))
