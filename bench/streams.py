"""Thousands of open SSE streams through one gateway worker: errors, RSS per stream, new TTFE.

Opens ``--streams`` concurrent streaming chat completions (model ``paced`` with
``x-mock-pace-ms: 1000``: the mock sends the first event at once, then one a second), each on
its own connection, and keeps them all open, reading. Then:

- **RSS per stream**: the gateway worker's resident memory (``/proc/<pid>/status``) before the
  streams (after a warm-up of 100) and once all are open, divided by their number;
- **bounded**: RSS again after ten more events on every stream (it must not grow with them);
- **TTFE while they are open**: ``--probes`` new streams, a few at a time, each timed from
  sending the request to the first ``data:`` event;
- **errors**: streams that failed to open or ended before the measurement did.

Every connection is closed at the end; the run is bounded by ``--timeout``. One JSON line.

    python -m bench.streams http://127.0.0.1:8800 --pid 1234 --streams 10000 [--key nx-...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

BODY = b'{"model":"paced","stream":true,"messages":[{"role":"user","content":"hi"}]}'
OPEN_AT_ONCE = 200  # streams being opened concurrently (an accept burst, not a SYN flood)


@dataclass
class Run:
    host: str
    port: int
    key: str | None
    chunks: int
    opened: int = 0
    errors: int = 0
    first_error: str | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def request(self) -> bytes:
        auth = f"Authorization: Bearer {self.key}\r\n" if self.key else ""
        return (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{auth}"
            "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"x-mock-pace-ms: 1000\r\nx-mock-chunks: {self.chunks}\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n"
        ).encode() + BODY

    def fail(self, what: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or what[:200]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def first_event(run: Run) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, float]:
    """Connect, send, read until the first ``data:``; (reader, writer, seconds it took)."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(run.host, run.port)
    writer.write(run.request())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        writer.close()
        raise RuntimeError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    seen = b""
    while b"data:" not in seen:
        chunk = await reader.read(4096)
        if not chunk:
            writer.close()
            raise RuntimeError("closed before the first event")
        seen = seen[-8:] + chunk
    return reader, writer, time.perf_counter() - start


async def hold(run: Run, opened: asyncio.Semaphore, ready: list[int]) -> None:
    """One stream: open it, then keep reading until the run stops (an early end is an error)."""
    writer = None
    try:
        async with opened:
            reader, writer, _ = await first_event(run)
        run.opened += 1
        ready[0] += 1
        while not run.stop.is_set():
            read = asyncio.ensure_future(reader.read(65536))
            stop = asyncio.ensure_future(run.stop.wait())
            done, _ = await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if read not in done:
                read.cancel()
                break
            if not read.result():
                run.fail("a stream ended early")
                break
    except (OSError, RuntimeError, asyncio.IncompleteReadError) as exc:
        run.fail(f"{type(exc).__name__}: {exc}")
    finally:
        if writer is not None:
            writer.close()


async def probe(run: Run, count: int, at_once: int, times: list[float]) -> None:
    """``count`` new streams, ``at_once`` at a time: time to the first event of each (ms)."""
    gate = asyncio.Semaphore(at_once)

    async def one() -> None:
        async with gate:
            try:
                _, writer, seconds = await first_event(run)
            except (OSError, RuntimeError, asyncio.IncompleteReadError) as exc:
                run.fail(f"probe: {type(exc).__name__}: {exc}")
                return
            times.append(seconds * 1000)
            writer.close()

    await asyncio.gather(*(one() for _ in range(count)))


async def open_streams(run: Run, n: int, deadline: float) -> list[asyncio.Task[None]]:
    ready = [0]
    gate = asyncio.Semaphore(OPEN_AT_ONCE)
    tasks = [asyncio.create_task(hold(run, gate, ready)) for _ in range(n)]
    # Polled, not awaited on an event: each stream stays open after it counts as ready.
    while ready[0] + run.errors < n and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    return tasks


async def close(run: Run, tasks: list[asyncio.Task[None]]) -> None:
    run.stop.set()
    await asyncio.wait(tasks, timeout=30)
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(args: argparse.Namespace) -> dict[str, object]:
    parts = urlsplit(args.url)
    deadline = time.monotonic() + args.timeout
    chunks = int(args.timeout) + 60  # outlives the run: an early end is an error
    warm = Run(parts.hostname or "127.0.0.1", parts.port or 80, args.key, chunks)
    # Warm-up: 100 streams opened and closed, so the code paths, caches and the first arenas
    # exist before RSS0; few enough that their freed memory does not hide the N streams' growth.
    await close(warm, await open_streams(warm, min(args.streams, 100), deadline))
    await asyncio.sleep(2)
    rss0 = rss_kib(args.pid)
    run = Run(warm.host, warm.port, args.key, chunks)
    started = time.monotonic()
    tasks = await open_streams(run, args.streams, deadline)
    open_s = time.monotonic() - started
    await asyncio.sleep(3)  # a few events on every stream
    rss1 = rss_kib(args.pid)
    try:  # bounded: what the probes measured by the deadline counts
        ttfe: list[float] = []
        await asyncio.wait_for(
            probe(run, args.probes, 4, ttfe), max(20.0, deadline - time.monotonic())
        )
    except TimeoutError:
        run.fail(f"probes: {len(ttfe)} of {args.probes} done by the deadline")
    await asyncio.sleep(10)  # ten more events on every stream: memory must not grow with them
    rss2 = rss_kib(args.pid)
    still_open = sum(1 for t in tasks if not t.done())
    await close(run, tasks)
    await asyncio.sleep(2)
    return {
        "streams": args.streams,
        "opened": run.opened,
        "open_s": round(open_s, 1),
        "still_open": still_open,
        "errors": run.errors + warm.errors,
        "first_error": run.first_error or warm.first_error,
        "rss_before_kib": rss0,
        "rss_open_kib": rss1,
        "rss_later_kib": rss2,
        "rss_after_close_kib": rss_kib(args.pid),
        "rss_per_stream_kib": round((rss1 - rss0) / max(run.opened, 1), 2),
        "ttfe_probes": len(ttfe),
        "ttfe_p50_ms": round(statistics.median(ttfe), 2) if ttfe else float("nan"),
        "ttfe_p99_ms": round(pct(ttfe, 0.99), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--pid", type=int, required=True, help="the gateway worker to weigh")
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--key")
    parser.add_argument("--timeout", type=float, default=150.0, help="opening and probing")
    args = parser.parse_args(argv)
    need = args.streams + args.probes + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(need, soft), max(need, hard)))
    print("BENCH_JSON " + json.dumps(asyncio.run(measure(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
