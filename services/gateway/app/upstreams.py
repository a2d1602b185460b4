"""Live state of each upstream instance: in-flight count, outlier ejection, active probing.

The routing table is rebuilt only when discovery changes; this state changes per request, so
it lives apart, keyed by instance key, and survives table swaps. An instance is *available*
when its last probe passed and it is not ejected.

- Passive: ``EJECT_AFTER_FAILURES`` consecutive failures (connect errors, timeouts, 5xx)
  eject it for ``EJECT_S``; a success resets the count. Never the last available instance
  of its service: under saturation timeouts would otherwise turn slowness into 503 for
  everyone. It stays routable (and probed); only a failing probe takes it out. Where a
  route's candidates are narrowed further (by model) and all of them are ejected, the
  balancer still picks among those whose probe passes (``routing.Balancer``).
- Active: every ``HEALTH_PROBE_INTERVAL_S`` each instance's ``/readyz`` (Ollama:
  ``/api/version``) is probed; a failing probe takes it out, a passing one brings it back at
  once (also out of an ejection). A probe that only timed out does not take out the last
  available instance of its service (a starved loop times out too); a refused connection
  or a not-ready answer does. But a probe that timed out *and* a lease that expired together
  mean the host is gone, not busy (a saturated instance still keeps its lease alive): the lease
  grace (grace.py) then removes it at once instead of probing it again (``grace_probe``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from nexus_kit import CheckResult, get_logger

from .discovery import Instance, Snapshot, describe_error
from .kinds import synthesized

log = get_logger("nexus.gateway.upstreams")
PROBE_TIMED_OUT = "probe timed out"


@dataclass(slots=True)
class UpstreamState:
    in_flight: int = 0
    failures: int = 0  # consecutive
    ejected_until: float = 0.0  # monotonic
    probe_ok: bool = True
    detail: str | None = None
    last_ok: float | None = None  # wall clock of the last success (request or probe)
    probe_timed_out: bool = False  # the latest active probe got no answer in time

    def available(self, now: float) -> bool:
        return self.probe_ok and now >= self.ejected_until


class Upstreams:
    def __init__(self, eject_after: int, eject_s: float) -> None:
        self.eject_after = eject_after
        self.eject_s = eject_s
        self.states: dict[str, UpstreamState] = {}
        self._peers: dict[str, tuple[str, ...]] = {}  # key -> routable keys of its service

    def state(self, key: str) -> UpstreamState:
        found = self.states.get(key)
        if found is None:
            found = self.states[key] = UpstreamState()
        return found

    def sync(self, snapshot: Snapshot) -> None:
        """Track the snapshot's instances; in-flight requests keep the object of one that left."""
        present = {i.key for i in snapshot.instances}
        for key in [k for k in self.states if k not in present]:
            del self.states[key]
        for key in present:
            self.state(key)
        by_service: dict[str, list[str]] = {}
        for i in snapshot.instances:
            if i.metadata is not None and not i.draining:
                by_service.setdefault(i.service, []).append(i.key)
        self._peers = {
            i.key: tuple(by_service.get(i.service, ())) for i in snapshot.instances
        }

    def success(self, key: str) -> None:
        state = self.states.get(key)
        if state is not None:  # None: the instance left while the request ran
            state.failures = 0
            state.last_ok = time.time()

    def failure(self, key: str, reason: str) -> None:
        state = self.states.get(key)
        if state is None:
            return
        state.failures += 1
        state.detail = reason
        now = time.monotonic()
        if state.failures < self.eject_after or now < state.ejected_until:
            return
        if not self._another_available(key, now):
            if state.failures == self.eject_after:  # once per run of failures
                log.warning("last available instance of its service kept routable",
                            instance=key, failures=state.failures, reason=reason)  # fmt: skip
            return
        state.ejected_until = now + self.eject_s
        log.warning("instance ejected", instance=key, failures=state.failures, reason=reason)

    def _another_available(self, key: str, now: float) -> bool:
        for peer in self._peers.get(key, ()):
            found = self.states.get(peer)
            if peer != key and found is not None and found.available(now):
                return True
        return False

    def probed(self, key: str, result: CheckResult) -> bool:
        """Record a probe; True when this brought the instance back."""
        state = self.state(key)
        now = time.monotonic()
        was_out = not state.available(now)
        state.probe_timed_out = not result.ok and result.detail == PROBE_TIMED_OUT
        if state.probe_timed_out and state.probe_ok:
            if not self._another_available(key, now):  # slow, maybe, not gone: keep it
                state.detail = result.detail
                return False
        state.probe_ok = result.ok
        state.detail = None if result.ok else result.detail
        if not result.ok:
            return False
        state.failures = 0
        state.ejected_until = 0.0
        state.last_ok = time.time()
        if was_out:
            log.info("instance back in", instance=key)
        return was_out

    def describe(self, instance: Instance) -> str:
        """One word for the admin views: ready, draining, pending, ejected or unhealthy."""
        if instance.draining:
            return "draining"
        if instance.metadata is None:
            return "pending"
        state = self.states.get(instance.key)
        if state is None:
            return "ready"
        if not state.probe_ok:
            return "unhealthy"
        return "ready" if state.available(time.monotonic()) else "ejected"


class Prober:
    """Probes every instance with metadata on a fixed interval."""

    def __init__(
        self,
        upstreams: Upstreams,
        http: httpx.AsyncClient,
        interval_s: float,
        snapshot: Callable[[], Snapshot],
        on_recovered: Callable[[Instance], None],
    ) -> None:
        self.upstreams = upstreams
        self.http = http
        self.interval_s = interval_s
        self.snapshot = snapshot
        self.on_recovered = on_recovered

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.probe_all()

    async def probe_all(self) -> None:
        targets = [i for i in self.snapshot().instances if i.metadata is not None]
        results = await asyncio.gather(*(probe(self.http, i) for i in targets))
        for instance, result in zip(targets, results, strict=True):
            if self.upstreams.probed(instance.key, result):
                self.on_recovered(instance)


async def grace_probe(
    upstreams: Upstreams, http: httpx.AsyncClient, instance: Instance
) -> CheckResult:
    """The lease grace's probe: fails at once, with no request, when the latest active probe of
    the instance timed out (lease gone and no answer: an unplugged host), else ``probe``."""
    state = upstreams.states.get(instance.key)
    if state is not None and state.probe_timed_out:
        return CheckResult(False, "its lease expired and its last probe timed out")
    return await probe(http, instance)


async def probe(http: httpx.AsyncClient, instance: Instance) -> CheckResult:
    try:
        kind = synthesized(instance.kind)
        if kind is not None:
            return await kind.probe(http, instance)
        resp = await http.get(f"{instance.base_url}/readyz")
    except (TimeoutError, httpx.TimeoutException):
        return CheckResult(False, PROBE_TIMED_OUT)
    except Exception as exc:
        return CheckResult(False, describe_error(exc))
    return CheckResult(
        resp.status_code == 200, None if resp.is_success else f"readyz {resp.status_code}"
    )
