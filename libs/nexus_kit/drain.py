"""Graceful drain on SIGTERM/SIGINT, with a pre-stop window first (as Kubernetes expects).

uvicorn owns the signals; its handler stops accepting connections and waits for running
requests, and only then runs the lifespan shutdown (where the etcd key is deleted). We chain a
handler in front of it:

1. **Pre-stop** (``PRESTOP_DELAY_S``, default 3 s; 0 in tests): the instance is marked draining
   at once (``/readyz`` 503 and ``"draining": true`` in etcd, so the gateway sends nothing new),
   but uvicorn's handler is called only after the delay, so the listener keeps accepting and
   serving meanwhile. A readiness probe or load balancer that polls every second sees the 503
   while connections still succeed, instead of "connection refused" 60-130 ms after it. A
   second signal during the window skips the rest of it.
2. **Drain**: uvicorn closes the listener; requests still running ``SHUTDOWN_GRACE_S`` later are
   cancelled so the process always exits. ``InFlight.cutting`` is set first, so the request
   context (and the gateway's proxy) can tell that cancellation from a client leaving: one log
   line per request cut, no ``CancelledError`` traceback, and the gateway ends a committed SSE
   stream with an error event and a clean end of the body.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any

from .logging import get_logger
from .middleware import InFlight
from .registration import Registrar

log = get_logger("nexus.drain")
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Drainer:
    def __init__(
        self, registrar: Registrar, in_flight: InFlight, grace_s: float, prestop_s: float = 0.0
    ) -> None:
        self.registrar = registrar
        self.in_flight = in_flight
        self.grace_s = grace_s
        self.prestop_s = prestop_s
        self.draining = False
        self._previous: dict[int, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stop_pending: asyncio.TimerHandle | None = None

    def install(self) -> None:
        """Chain our handler before uvicorn's; only possible from the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        if self._stop_pending is not None:
            self._stop_pending.cancel()
            self._stop_pending = None
        for sig, handler in self._previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous.get(signum)
        loop = self._loop
        if not self.draining and loop is not None:
            loop.call_soon_threadsafe(self.begin)
            if self.prestop_s > 0 and callable(previous):
                # Python runs signal handlers in the main thread, the loop's own.
                self._stop_pending = loop.call_later(self.prestop_s, self._stop, previous, signum)
                return
        if self._stop_pending is not None:  # a second signal: no more waiting
            self._stop_pending.cancel()
            self._stop_pending = None
        if callable(previous):
            previous(signum, frame)

    def _stop(self, previous: Any, signum: int) -> None:
        self._stop_pending = None
        log.info("pre-stop window over; closing the listener", prestop_s=self.prestop_s)
        previous(signum, None)

    def begin(self) -> None:
        """Start draining: advertise it, then bound how long in-flight requests may run."""
        if self.draining:
            return
        self.draining = True
        log.info("draining", in_flight=len(self.in_flight.tasks), grace_s=self.grace_s,
                 prestop_s=self.prestop_s)  # fmt: skip
        self._spawn(self.registrar.mark_draining())
        self._spawn(self._deadline())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deadline(self) -> None:
        await asyncio.sleep(self.prestop_s)  # still serving: the grace starts with the drain
        try:
            await asyncio.wait_for(self.in_flight.idle.wait(), self.grace_s)
        except TimeoutError:
            cut = self.in_flight.cancel_all()
            log.warning("grace period over; cancelled in-flight requests", cancelled=cut)


def drain_cut(scope: Mapping[str, Any]) -> bool:
    """Whether a request's cancellation is the drain cutting it (its app's grace is over)."""
    kit = getattr(getattr(scope.get("app"), "state", None), "kit", None)
    in_flight = getattr(kit, "in_flight", None)
    return bool(getattr(in_flight, "cutting", False))
