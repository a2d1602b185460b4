"""The read timeout of open upstream streams, kept by one sweep instead of a timer per chunk.

aiohttp enforces ``sock_read`` (no byte for that long: ``SocketTimeoutError``) by cancelling
and re-arming a timer on every chunk it receives. For a stream that is one new ``TimerHandle``
per event pushed on the loop's heap, the cancelled one left there until the loop cleans up:
at 10,000 open streams, 10,000 handles a second, ~5-6% of a relayed event's CPU and a steady
stream of young objects for the garbage collector (issue 14, ADR 0015).

For a streamed response the proxy turns aiohttp's timer off (``read_timeout = None`` on the
connection's protocol, aiohttp's public setter; it is set again for the connection's next
request) and registers the stream here. Every ``interval`` a sweep compares each stream's
``content.total_bytes`` with what it had at the last sweep; a stream that received nothing
for its limit (reading paused because the client is slow does not count) fails exactly as
aiohttp's own timeout would: ``SocketTimeoutError`` on the protocol and the body reader, so
the relay's read raises it (an SSE error event, ADR 0014).
The limit is kept to within one interval (a quarter of the shortest limit, at most 5 s).
"""

from __future__ import annotations

import asyncio

import aiohttp

MAX_INTERVAL_S = 5.0


class Gap:
    """One watched stream: its response, its limit, the bytes and time of its last progress."""

    __slots__ = ("bytes", "limit_s", "response", "since")

    def __init__(self, response: aiohttp.ClientResponse, limit_s: float, now: float) -> None:
        self.response = response
        self.limit_s = limit_s
        self.bytes = response.content.total_bytes
        self.since = now


class ReadGaps:
    """Every open stream's read timeout, checked by one timer per worker every
    ``interval_s`` (a quarter of the shortest limit it will be given, at most 5 s)."""

    def __init__(self, shortest_limit_s: float = 4 * MAX_INTERVAL_S) -> None:
        self._gaps: set[Gap] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._interval = min(MAX_INTERVAL_S, shortest_limit_s / 4)

    def __len__(self) -> int:
        return len(self._gaps)

    def watch(self, response: aiohttp.ClientResponse, limit_s: float) -> Gap | None:
        """Take over ``response``'s read timeout; None (aiohttp keeps it) without a connection."""
        connection = response.connection
        protocol = connection.protocol if connection is not None else None
        if protocol is None:
            return None  # already read to the end: nothing left to time
        protocol.read_timeout = None
        loop = asyncio.get_running_loop()
        gap = Gap(response, limit_s, loop.time())
        self._gaps.add(gap)
        if self._handle is None:
            self._handle = loop.call_later(self._interval, self._sweep)
        return gap

    def forget(self, gap: Gap | None) -> None:
        if gap is not None:
            self._gaps.discard(gap)

    def _sweep(self) -> None:
        self._handle = None
        if not self._gaps:
            return  # idle: the next watch starts it again
        loop = asyncio.get_running_loop()
        now = loop.time()
        for gap in list(self._gaps):
            total = gap.response.content.total_bytes
            if total != gap.bytes or _paused(gap.response):
                gap.bytes, gap.since = total, now
            elif now - gap.since >= gap.limit_s:
                self._gaps.discard(gap)
                _time_out(gap.response)
        self._handle = loop.call_later(self._interval, self._sweep)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._gaps.clear()


def _paused(response: aiohttp.ClientResponse) -> bool:
    """Reading from the upstream is paused because the client is not taking the bytes (the
    body buffer is full): the silence is the client's, and does not count, as with aiohttp's
    own timer (stopped while paused)."""
    connection = response.connection
    transport = connection.transport if connection is not None else None
    return transport is not None and not transport.is_reading()


def _time_out(response: aiohttp.ClientResponse) -> None:
    """What aiohttp's own read timeout does: the reader and the protocol fail with it."""
    error = aiohttp.SocketTimeoutError("Timeout on reading data from socket")
    response.content.set_exception(error)
    connection = response.connection
    if connection is not None and connection.protocol is not None:
        connection.protocol.set_exception(error)
