"""Lease expiry is not goodbye: an instance whose key expired keeps routing while it stays healthy.

A key can leave etcd two ways (docs/adr/0008-lease-expiry-vs-deregistration.md):

- **Deregistration**: the service marks its key ``"draining": true``, finishes its requests and
  deletes the key. The gateway removes the instance at once.
- **Lease expiry**: keep-alives did not reach etcd in time. That happens when the instance died
  (SIGKILL, host gone), but also when etcd itself stalled: a frozen etcd (SIGSTOP, a long GC or
  fsync pause, a VM migration) expires *every* lease at once when it resumes, and dropping them
  all emptied the routing table for every service until each re-registered.

So after an expiry (a delete of a leased key that was not draining) the instance is kept, marked
``expired_at``, for at most ``DISCOVERY_LEASE_GRACE_S``, and probed (its ``/readyz``, Ollama's
``/api/version``) every ``DISCOVERY_GRACE_PROBE_S``: the first failing probe removes it, a
re-registration (a put of the same key, as the kit's registrar does after any lost lease) ends the
grace, and the deadline removes it whatever the probes say. A dead instance is therefore gone
after one failed probe; a live one never leaves the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from nexus_kit import CheckResult, get_logger

if TYPE_CHECKING:
    from .discovery import Instance

log = get_logger("nexus.gateway.grace")

Probe = Callable[["Instance"], Awaitable[CheckResult]]


class LeaseGrace:
    """One probing task per expired instance; ``expire`` is called when it must go."""

    def __init__(
        self,
        grace_s: float,
        probe_every_s: float,
        probe: Probe | None,
        current: Callable[[str], Instance | None],
        expire: Callable[[str, str], None],
    ) -> None:
        self.grace_s = grace_s
        self.probe_every_s = probe_every_s
        self._probe = probe
        self._current = current
        self._expire = expire
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def applies_to(self, entry: Instance) -> bool:
        """Whether a vanished key gets a grace: leased, not draining, known to work."""
        return (
            self._probe is not None
            and self.grace_s > 0
            and entry.source == "etcd"
            and entry.lease != 0
            and not entry.draining
            and entry.metadata is not None
            # a failed refresh of a model list it already has is no sign it stopped working
            and (entry.error is None or bool(entry.metadata.models))
        )

    def start(self, key: str) -> None:
        self.cancel(key)
        self._tasks[key] = asyncio.create_task(self._watch(key), name=f"gateway-grace-{key}")

    def cancel(self, key: str) -> None:
        task = self._tasks.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _watch(self, key: str) -> None:
        assert self._probe is not None
        deadline = time.monotonic() + self.grace_s
        while True:
            entry = self._current(key)
            if entry is None or entry.expired_at is None:
                return  # re-registered (or removed) meanwhile: the grace is over
            if time.monotonic() >= deadline:
                self._done(key, f"lease grace of {self.grace_s:g} s over")
                return
            result = await self._probe(entry)
            if not result.ok:
                self._done(key, f"failed its probe during the lease grace: {result.detail}")
                return
            await asyncio.sleep(min(self.probe_every_s, max(0.0, deadline - time.monotonic())))

    def _done(self, key: str, reason: str) -> None:
        self._tasks.pop(key, None)
        entry = self._current(key)
        if entry is not None and entry.expired_at is not None:
            log.info("expired instance removed", instance=key, reason=reason)
            self._expire(key, reason)
