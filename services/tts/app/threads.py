"""Blocking work (model loading, PyTorch inference) run on daemon threads, awaited from asyncio.

Daemon threads rather than ``asyncio.to_thread``: the default executor is small (cores + 4) and
is joined at shutdown, so a model download stuck on the network would hold the process open
and queued generations would starve the encoders that share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def _post(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop closed while we worked: nobody is waiting any more
        pass


async def in_daemon_thread(work: Callable[[], T], name: str) -> T:
    """Run ``work()`` on a new daemon thread and await its result (or exception)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outcome)  # type: ignore[arg-type]

    def run() -> None:
        try:
            outcome = work()
        except BaseException as exc:
            _post(loop, settle, None, exc)
        else:
            _post(loop, settle, outcome, None)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await future


async def iterate_in_thread(
    make: Callable[[threading.Event], Iterator[T]], name: str
) -> AsyncIterator[T]:
    """Items of a blocking iterator, produced on a daemon thread, delivered as they come.

    ``make`` receives a stop event, set when the consumer goes away (client disconnect), so the
    producer can stop early instead of finishing a generation nobody will hear.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stop = threading.Event()

    def run() -> None:
        try:
            for item in make(stop):
                _post(loop, queue.put_nowait, ("item", item))
                if stop.is_set():
                    break
        except BaseException as exc:
            _post(loop, queue.put_nowait, ("error", exc))
        else:
            _post(loop, queue.put_nowait, ("done", None))

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


def closing(source: AsyncIterator[T]) -> contextlib.AbstractAsyncContextManager[AsyncIterator[T]]:
    """``async with closing(it) as it:`` closes a generator when the consumer stops early.

    Leaving an ``async for`` early does not close the generator it read from: its ``finally``
    (kill a process, stop a model thread) would wait for garbage collection.
    """
    if isinstance(source, AsyncGenerator):
        return contextlib.aclosing(source)
    return contextlib.nullcontext(source)
