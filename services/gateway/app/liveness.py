"""Timers around one proxied exchange: SSE keep-alive comments and the client-disconnect watch.

Both used to be a task per request, awaited through ``asyncio.wait``; on the hot path that is
two or three extra tasks and as many trips through the event loop's queue before a stream's
first event (time to first event is a target). Now the request task awaits the upstream
itself and a timer handle (``call_later``, cancelled when done) does the rest, so a request
that is answered before the timer fires creates no task at all:

- ``KeepAlive``: every ``SSE_KEEPALIVE_S`` while it runs, a short task sends ``: keep-alive``.
  ``stop()`` waits for one that is mid-send, so the request task never sends concurrently.
- ``Watch``: after ``WATCH_AFTER_S`` a task listens on ``receive()`` and cancels the request
  task when the client goes away (the upstream call is cancelled with it) or when the total
  timeout is reached (one timer for both, instead of ``asyncio.timeout`` plus a watcher).
  Quicker requests never need it; a client that leaves earlier is noticed at that point.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.types import Receive

from .exchange import Exchange

T = TypeVar("T")
WATCH_AFTER_S = 0.2


class KeepAlive:
    __slots__ = ("_error", "_ex", "_handle", "_interval", "_loop", "_sending")

    def __init__(self, ex: Exchange, interval_s: float, first_s: float | None = None) -> None:
        self._ex = ex
        self._interval = interval_s
        self._loop = asyncio.get_running_loop()
        self._sending: asyncio.Task[None] | None = None
        self._error: Exception | None = None
        first = interval_s if first_s is None else min(first_s, interval_s)
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(first, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._sending = self._loop.create_task(self._send())

    async def _send(self) -> None:
        try:
            await self._ex.keepalive()
        except Exception as exc:  # the client is gone; the request task hears it in stop()
            self._error = exc
            return
        self._handle = self._loop.call_later(self._interval, self._fire)

    async def stop(self) -> None:
        """No more comments; returns once none is being sent (raises what sending raised)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        sending, self._sending = self._sending, None
        if sending is not None and not sending.done():
            await sending
        if self._handle is not None:  # re-armed by the send we just waited for
            self._handle.cancel()
            self._handle = None
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        """The request is over (or cancelled): stop without waiting."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._sending is not None:
            self._sending.cancel()
            self._sending = None


class Watch:
    """The client and the clock, watched for one request from ``WATCH_AFTER_S`` on.

    After ``WATCH_AFTER_S`` (or at the total deadline, if sooner) a task listens on
    ``receive()``: a disconnect sets ``ex.client_gone`` and cancels the request task; reaching
    the deadline sets ``timed_out`` and cancels it. The request task tells the two apart by
    those flags. A request done before the timer fires never starts the task.
    """

    __slots__ = ("_body_done", "_deadline", "_ex", "_handle", "_receive", "_request", "_task",
                 "timed_out")  # fmt: skip

    def __init__(
        self,
        receive: Receive,
        body_done: asyncio.Event,
        ex: Exchange,
        request: asyncio.Task[None],
        total_s: float | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._receive = receive
        self._body_done = body_done
        self._ex = ex
        self._request = request
        self._deadline = loop.time() + total_s if total_s else None
        self._task: asyncio.Task[None] | None = None
        self.timed_out = False
        first = min(WATCH_AFTER_S, total_s) if total_s else WATCH_AFTER_S
        self._handle: asyncio.TimerHandle | None = loop.call_later(first, self._start)

    def _start(self) -> None:
        self._handle = None
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        try:
            async with asyncio.timeout_at(self._deadline):
                await self._body_done.wait()  # a streamed upload owns receive() until it ends
                while (await self._receive())["type"] != "http.disconnect":
                    pass
            self._stop(client_gone=True)
        except TimeoutError:
            self._stop(client_gone=False)

    def _stop(self, *, client_gone: bool) -> None:
        if self._ex.finished:
            return
        if client_gone:
            self._ex.client_gone = True
        else:
            self.timed_out = True
        self._request.cancel()

    def cancel(self) -> None:
        """The request is over: stop watching, and let go of the watcher task. Its
        ``CancelledError`` keeps the watcher's frame, which holds this Watch: a reference
        kept here would make a cycle of the whole request, left for the cyclic collector."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._task is not None:
            self._task.cancel()
            self._task = None


async def with_keepalive(
    ex: Exchange,
    interval_s: float,
    awaitable: Awaitable[T],
    abandon: Callable[[T], None] | None = None,
    first_s: float | None = None,
) -> T:
    """Await in this task while ``: keep-alive`` comments go out every ``interval_s``.

    ``abandon`` releases a result that was obtained but can no longer be used (the request
    was cancelled, or the client left, while the last comment was being sent). ``first_s``:
    when the first comment goes out (it commits ``200 text/event-stream``), if sooner."""
    ticker = KeepAlive(ex, interval_s, first_s)
    try:
        result = await awaitable
    except BaseException:
        ticker.cancel()
        raise
    try:
        await ticker.stop()
    except BaseException:
        ticker.cancel()
        if abandon is not None:
            abandon(result)
        raise
    return result
