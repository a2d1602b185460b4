"""The admin live feed ``GET /v1/services/events``: discovery changes as Server-Sent Events.

A subscriber gets one ``snapshot`` event on connect and one more after every routing-table
swap (several swaps in quick succession are coalesced into one event). Between swaps the
instances' live state (health, ejection, in-flight counts) is re-read every
``EVENTS_POLL_S`` and sent when it changed, so a console sees an ejection without waiting
for etcd. Each event's ``data`` is one JSON document::

    {"object": "nexus.snapshot", "revision": 12, "synced": true,
     "services": <GET /v1/services>, "routes": <GET /v1/routes>, "models": <GET /v1/models>}

A ``: keep-alive`` comment goes out every ``EVENTS_KEEPALIVE_S`` of silence. The stream ends
when the client goes away, the gateway starts draining, or the hub is closed at shutdown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

EVENTS_POLL_S = 1.0
EVENTS_KEEPALIVE_S = 15.0


class EventHub:
    """Wakes every subscriber on a table swap. Called on the event loop only."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Event] = set()
        self.closed = False

    def notify(self) -> None:
        for waiter in self._waiters:
            waiter.set()

    def close(self) -> None:
        self.closed = True
        self.notify()

    @property
    def subscribers(self) -> int:
        return len(self._waiters)

    async def stream(
        self,
        document: Callable[[], dict[str, Any]],
        stop: Callable[[], bool],
        *,
        poll_s: float = EVENTS_POLL_S,
        keepalive_s: float = EVENTS_KEEPALIVE_S,
    ) -> AsyncIterator[bytes]:
        """SSE bytes: the current document now, then again whenever it changes."""
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        try:
            yield b"retry: 1000\n\n"
            last = b""
            quiet_since = time.monotonic()
            while not (self.closed or stop()):
                waiter.clear()
                body = orjson.dumps(document())
                if body != last:
                    last = body
                    quiet_since = time.monotonic()
                    yield b"event: snapshot\ndata: " + body + b"\n\n"
                elif time.monotonic() - quiet_since >= keepalive_s:
                    quiet_since = time.monotonic()
                    yield b": keep-alive\n\n"
                try:
                    await asyncio.wait_for(waiter.wait(), poll_s)
                except TimeoutError:
                    pass
        finally:
            self._waiters.discard(waiter)
