"""Graceful drain on SIGTERM/SIGINT.

uvicorn owns the signals; its handler stops accepting connections and waits for running
requests, and only then runs the lifespan shutdown (where the etcd key is deleted). We chain a
handler in front of it that first marks the instance draining (readyz 503 and
``"draining": true`` in etcd, so the gateway sends nothing new), and arms a deadline: requests
still running ``SHUTDOWN_GRACE_S`` later are cancelled so the process always exits.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from types import FrameType
from typing import Any

from .logging import get_logger
from .middleware import InFlight
from .registration import Registrar

log = get_logger("nexus.drain")
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Drainer:
    def __init__(self, registrar: Registrar, in_flight: InFlight, grace_s: float) -> None:
        self.registrar = registrar
        self.in_flight = in_flight
        self.grace_s = grace_s
        self.draining = False
        self._previous: dict[int, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def install(self) -> None:
        """Chain our handler before uvicorn's; only possible from the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.draining and self._loop is not None:
            self._loop.call_soon_threadsafe(self.begin)
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)

    def begin(self) -> None:
        """Start draining: advertise it, then bound how long in-flight requests may run."""
        if self.draining:
            return
        self.draining = True
        log.info("draining", in_flight=len(self.in_flight.tasks), grace_s=self.grace_s)
        self._spawn(self.registrar.mark_draining())
        self._spawn(self._deadline())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deadline(self) -> None:
        try:
            await asyncio.wait_for(self.in_flight.idle.wait(), self.grace_s)
        except TimeoutError:
            cut = self.in_flight.cancel_all()
            log.warning("grace period over; cancelled in-flight requests", cancelled=cut)

