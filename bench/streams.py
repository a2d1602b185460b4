"""Thousands of open SSE streams through one gateway worker: errors, RSS and CPU, new TTFE.

Opens ``--streams`` concurrent streaming chat completions (model ``paced`` with
``x-mock-pace-ms: 1000``: the mock sends the first event at once, then one a second), each on
its own connection, and keeps them all open, reading. Then:

- **how many**: the worker needs two descriptors per stream (client + upstream), so the count
  is capped by its ``RLIMIT_NOFILE`` (``/proc/<pid>/limits``) less the descriptors it holds
  idle, those of the probes in flight and ``FD_SPARE``;
- **RSS per stream**: the gateway worker's resident memory (``/proc/<pid>/status``) before the
  streams (after a warm-up of 100) and once all are open, divided by their number;
- **TTFE while they are open**: ``--probes`` new streams, ``PROBES_AT_ONCE`` at a time, from a
  separate process (its own event loop: a probe's first event never waits behind the holders'
  callbacks), started evenly over ``PROBE_SPAN_S``, each timed from the request's write to
  the ``data_received`` holding the first ``data:``. A probe asks for one event
  (``x-mock-chunks: 1``: the mock sends it and ``[DONE]`` at once) and reads its stream to the
  end before closing: a probe closed mid-stream would hold the worker's two descriptors until
  it noticed (up to ``liveness.WATCH_AFTER_S``), and at the descriptor limit ``accept`` fails
  and asyncio stops accepting for a second, which is what the slowest TTFEs used to measure;
- **CPU while they are held** (no probes, ``HOLD_S``): the gateway worker's and the mock's
  utime+stime (``/proc/<pid>/stat``) as % of one core and per relayed event, this client's
  own, and how busy each core was (``/proc/stat``): a saturated load core would inflate TTFE;
- **bounded**: RSS again after those ``HOLD_S`` seconds of events (it must not grow with them);
- **errors**: streams that failed to open or ended before the measurement did.

Each held stream is an ``asyncio.Protocol`` and nothing else: no task, future or buffer per
event (one future per stream, set by its first event). Every connection is closed at the end;
the run is bounded by ``--timeout``. One JSON line.

    python -m bench.streams http://127.0.0.1:8800 --pid 1234 --streams 10000 [--key nx-...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

BODY = b'{"model":"paced","stream":true,"messages":[{"role":"user","content":"hi"}]}'
# What the openai Python SDK (3.51, sync client) sends with a chat completion besides Host,
# authorization and Content-Length: a stream held open keeps its request's headers, so the
# per-stream figure is that of a real client's request, not of a bare one.
SDK_HEADERS = (
    "Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\naccept: application/json\r\n"
    "content-type: application/json\r\nuser-agent: OpenAI/Python 3.51.0\r\n"
    "x-stainless-lang: python\r\nx-stainless-package-version: 3.51.0\r\n"
    "x-stainless-os: Linux\r\nx-stainless-arch: x64\r\nx-stainless-runtime: CPython\r\n"
    "x-stainless-runtime-version: 3.11.7\r\nx-stainless-async: false\r\n"
    "x-stainless-retry-count: 0\r\nx-stainless-read-timeout: 600\r\n"
)
OPEN_AT_ONCE = 200  # streams being opened concurrently (an accept burst, not a SYN flood)
PROBES_AT_ONCE = 4  # new streams timed concurrently while the others are open
# Probes are spread over this long, not sent back to back (200 of them took 0.6 s): each samples
# the worker at a random moment, a collector pause or a burst of events included.
PROBE_SPAN_S = 10.0
FD_SPARE = 32  # descriptors left free in the worker beyond idle + streams + probes
HOLD_S = 10.0  # the window CPU and the "later" RSS are taken over
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    host: str
    port: int
    key: str | None
    chunks: int
    opened: int = 0
    errors: int = 0
    events: int = 0  # ``data:`` lines received, first events included
    last_read: float = 0.0  # perf_counter of the last read on any open stream
    max_gap: float = 0.0  # the longest time without a read on any of them (a stall)
    first_error: str | None = None
    request: bytes = field(init=False)

    def __post_init__(self) -> None:
        auth = f"authorization: Bearer {self.key}\r\n" if self.key else ""
        self.request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{auth}"
            f"{SDK_HEADERS}x-mock-pace-ms: 1000\r\nx-mock-chunks: {self.chunks}\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n"
        ).encode() + BODY

    def fail(self, what: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or what[:200]


class Stream(asyncio.Protocol):
    """One stream, driven by the loop's callbacks alone.

    ``connection_made`` writes the request (``sent``); ``data_received`` checks the status
    line, stamps ``first`` at the read holding the first ``data:`` and from then on only counts
    events; ``connection_lost`` not caused by ``close()`` is an error (an early end)."""

    __slots__ = ("end", "first", "head", "ready", "run", "sent", "transport")

    def __init__(
        self, run: Run, ready: asyncio.Future[None], end: asyncio.Future[None] | None = None
    ) -> None:
        self.run = run
        self.ready = ready  # done at the first event or at a failure, whichever comes first
        self.end = end  # a probe's: done at the end of its response (or a failure)
        self.transport: asyncio.Transport | None = None
        self.sent = 0.0
        self.first = 0.0
        self.head = b""  # what came before the first event (headers, chunk size)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it
        self.sent = time.perf_counter()
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        if self.end is not None and _last_chunk(data) and not self.end.done():
            self.end.set_result(None)  # the stream is over
        if self.first:
            run = self.run
            run.events += data.count(b"data:")
            now = time.perf_counter()
            if now - run.last_read > run.max_gap:
                run.max_gap = now - run.last_read
            run.last_read = now
            return
        now = time.perf_counter()
        head = self.head + data
        if len(head) >= 12 and not head.startswith(b"HTTP/1.1 200"):
            self._failed(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            return
        body_at = head.find(b"\r\n\r\n")
        if body_at < 0 or b"data:" not in head[body_at:]:
            self.head = head
            return
        self.first = now
        self.head = b""
        self.run.events += head.count(b"data:", body_at)
        if not self.ready.done():
            self.ready.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:  # closed by close(): the end of the run, not an error
            return
        self.transport = None
        what = "a stream ended early" if self.first else "closed before the first event"
        self._failed(what + (f" ({type(exc).__name__}: {exc})" if exc else ""))

    def _failed(self, what: str) -> None:
        self.run.fail(what)
        self.close()
        for future in (self.ready, self.end):
            if future is not None and not future.done():
                future.set_result(None)

    def close(self) -> None:
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.close()


def _last_chunk(data: bytes) -> bool:
    """``data`` ends with a chunked body's zero-size last chunk (a read of its own, or the tail
    of one; an SSE payload ends ``\\n\\n``, so no data chunk ends like this)."""
    return data == b"0\r\n\r\n" or data.endswith(b"\n0\r\n\r\n")


async def connect(run: Run, deadline: float, whole: bool = False) -> Stream:
    """A new stream, returned once its first event came (``first`` set) or it failed;
    ``whole``: once its response ended (``transport`` still set) or it failed."""
    loop = asyncio.get_running_loop()
    stream = Stream(run, loop.create_future(), loop.create_future() if whole else None)
    try:
        async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
            await loop.create_connection(lambda: stream, run.host, run.port)
            await stream.ready
            if stream.end is not None:
                await stream.end
    except (OSError, TimeoutError) as exc:
        if not stream.ready.done() or (stream.end is not None and not stream.end.done()):
            run.fail(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        stream.close()
    return stream


async def open_streams(run: Run, n: int, deadline: float) -> list[Stream]:
    """``n`` streams, ``OPEN_AT_ONCE`` being opened at a time; they stay open once counted."""
    streams: list[Stream] = []
    left = [n]

    async def opener() -> None:
        while left[0] > 0 and time.monotonic() < deadline:
            left[0] -= 1
            stream = await connect(run, deadline)
            streams.append(stream)  # kept (and open) until close()
            if stream.first:
                run.opened += 1

    # A handful of opener tasks, each gone once the streams are open: none per stream.
    await asyncio.gather(*(opener() for _ in range(min(OPEN_AT_ONCE, n))))
    return streams


def close(streams: list[Stream]) -> None:
    for stream in streams:
        stream.close()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------- /proc readings


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_limit(pid: int) -> int:
    """The soft ``RLIMIT_NOFILE`` of ``pid`` (what its ``accept``/``connect`` run into)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft = line.split()[3]
            return 1_048_576 if soft == "unlimited" else int(soft)
    raise RuntimeError(f"no open-file limit for pid {pid}")


def cpu_s(pid: int) -> float:
    """utime + stime of every thread of ``pid``, in seconds (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def core_ticks() -> dict[str, tuple[int, int]]:
    """Per core: (busy, total) jiffies from ``/proc/stat`` (idle, iowait and steal not busy)."""
    ticks: dict[str, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            v = [int(x) for x in values]
            total = sum(v[:8])  # user nice system idle iowait irq softirq steal
            ticks[name.removeprefix("cpu")] = (total - v[3] - v[4] - v[7], total)
    return ticks


@dataclass
class Window:
    """CPU of the gateway worker, the mock, this process and every core over a span of time."""

    run: Run
    pids: dict[str, int]
    wall: float = field(default_factory=time.monotonic)
    events: int = 0
    own: float = field(default_factory=own_cpu_s)
    cpu: dict[str, float] = field(default_factory=dict)
    cores: dict[str, tuple[int, int]] = field(default_factory=core_ticks)

    def __post_init__(self) -> None:
        self.events = self.run.events
        self.run.last_read, self.run.max_gap = time.perf_counter(), 0.0
        self.cpu = {name: cpu_s(pid) for name, pid in self.pids.items()}

    def end(self, prefix: str) -> dict[str, object]:
        wall = time.monotonic() - self.wall
        events = self.run.events - self.events
        out: dict[str, object] = {f"{prefix}_s": round(wall, 1)}
        for name, pid in self.pids.items():
            used = cpu_s(pid) - self.cpu[name]
            out[f"{prefix}_{name}_cpu_s"] = round(used, 2)
            out[f"{prefix}_{name}_cpu_pct"] = round(100 * used / wall, 1)
            if name == "gateway" and events and prefix == "hold":  # only events to relay
                out[f"{prefix}_gateway_us_per_event"] = round(1e6 * used / events, 1)
        out[f"{prefix}_client_cpu_pct"] = round(100 * (own_cpu_s() - self.own) / wall, 1)
        out[f"{prefix}_events_per_s"] = round(events / wall)
        # With thousands of streams an event a second each, reads come every few µs unless
        # the gateway stalls (a long GC pass, a blocked loop): its longest silence.
        out[f"{prefix}_max_gap_ms"] = round(1000 * self.run.max_gap, 1)
        busy = {}
        for core, (b1, t1) in core_ticks().items():
            b0, t0 = self.cores.get(core, (b1, t1))
            busy[core] = round(100 * (b1 - b0) / max(t1 - t0, 1), 1)
        out[f"{prefix}_core_busy_pct"] = busy
        return out


# ---------------------------------------------------------------- probes (own process)


async def probes(run: Run, count: int, deadline: float) -> dict[str, object]:
    """``count`` new streams started evenly over ``PROBE_SPAN_S``, at most ``PROBES_AT_ONCE``
    at a time: time to the first event (ms)."""
    times: list[float] = []
    left = [count]
    started, cpu0 = time.monotonic(), own_cpu_s()

    async def prober() -> None:
        while left[0] > 0 and time.monotonic() < deadline:
            due = started + PROBE_SPAN_S * (count - left[0]) / count
            left[0] -= 1
            await asyncio.sleep(due - time.monotonic())  # no wait once behind
            stream = await connect(run, deadline, whole=True)
            if stream.first and stream.transport is not None:  # first event, then the end
                times.append((stream.first - stream.sent) * 1000)
            stream.close()

    await asyncio.gather(*(prober() for _ in range(min(PROBES_AT_ONCE, count))))
    wall = time.monotonic() - started
    return {
        "ttfe_ms": [round(t, 3) for t in times],
        "errors": run.errors,
        "first_error": run.first_error,
        "wall_s": round(wall, 2),
        "cpu_pct": round(100 * (own_cpu_s() - cpu0) / max(wall, 1e-9), 1),
    }


async def run_probes(args: argparse.Namespace, deadline: float) -> dict[str, object]:
    """This module with ``--probe-only`` as a child process (it inherits the CPU pinning)."""
    budget = max(20.0, deadline - time.monotonic())
    cmd = [sys.executable, "-m", "bench.streams", args.url, "--probe-only", str(args.probes),
           "--timeout", f"{budget:.0f}", *(["--key", args.key] if args.key else [])]  # fmt: skip
    child = await asyncio.create_subprocess_exec(
        *cmd, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(child.communicate(), budget + 15)
    except TimeoutError:
        child.kill()
        await child.wait()
        return {"ttfe_ms": [], "errors": 1, "first_error": "the probe process ran past its time"}
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("BENCH_JSON "):
            parsed: dict[str, object] = json.loads(line.removeprefix("BENCH_JSON "))
            return parsed
    return {"ttfe_ms": [], "errors": 1, "first_error": f"probe process: {out[-300:]!r}"}


# ---------------------------------------------------------------- the measurement


async def measure(args: argparse.Namespace) -> dict[str, object]:
    parts = urlsplit(args.url)
    deadline = time.monotonic() + args.timeout
    chunks = int(args.timeout + 3 * HOLD_S) + 60  # outlives the run: an early end is an error
    warm = Run(parts.hostname or "127.0.0.1", parts.port or 80, args.key, chunks)
    # Warm-up: 100 streams opened and closed, so the code paths, caches and the first arenas
    # exist before RSS0; few enough that their freed memory does not hide the N streams' growth.
    close(await open_streams(warm, min(args.streams, 100), deadline))
    await asyncio.sleep(2)
    rss0, fd_idle, limit = rss_kib(args.pid), fd_count(args.pid), fd_limit(args.pid)
    n = min(args.streams, (limit - fd_idle - 2 * PROBES_AT_ONCE - FD_SPARE) // 2)
    run = Run(warm.host, warm.port, args.key, chunks)
    started = time.monotonic()
    streams = await open_streams(run, n, deadline)
    open_s = time.monotonic() - started
    await asyncio.sleep(3)  # a few events on every stream
    rss1, fd_open = rss_kib(args.pid), fd_count(args.pid)
    pids = {"gateway": args.pid, **({"mock": args.mock_pid} if args.mock_pid else {})}
    window = Window(run, pids)
    probed = await run_probes(args, deadline)
    during_probes = window.end("probing")
    window = Window(run, pids)
    await asyncio.sleep(HOLD_S)  # HOLD_S more events on every stream: memory must not grow
    held = window.end("hold")
    rss2 = rss_kib(args.pid)
    still_open = sum(1 for s in streams if s.transport is not None)
    close(streams)
    await asyncio.sleep(2)
    ttfe = cast(list[float], probed.get("ttfe_ms") or [])
    probe_errors = int(cast(int, probed.get("errors") or 0))
    if len(ttfe) + probe_errors < args.probes:
        probe_errors += 1
        probed["first_error"] = probed.get("first_error") or (
            f"probes: {len(ttfe)} of {args.probes} done by the deadline"
        )
    return {
        "streams_wanted": args.streams,
        "streams": n,
        "fd_limit": limit,
        "fd_idle": fd_idle,
        "fd_open": fd_open,
        "opened": run.opened,
        "open_s": round(open_s, 1),
        "still_open": still_open,
        "errors": run.errors + warm.errors + probe_errors,
        "first_error": run.first_error or warm.first_error or probed.get("first_error"),
        "rss_before_kib": rss0,
        "rss_open_kib": rss1,
        "rss_later_kib": rss2,
        "rss_after_close_kib": rss_kib(args.pid),
        "fd_after_close": fd_count(args.pid),
        "rss_per_stream_kib": round((rss1 - rss0) / max(run.opened, 1), 2),
        "ttfe_probes": len(ttfe),
        "ttfe_p50_ms": round(statistics.median(ttfe), 2) if ttfe else float("nan"),
        "ttfe_p99_ms": round(pct(ttfe, 0.99), 2),
        "ttfe_slowest_ms": sorted(ttfe)[-5:],
        "probe_client_cpu_pct": probed.get("cpu_pct"),
        **held,
        **during_probes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--pid", type=int, help="the gateway worker to weigh (required)")
    parser.add_argument("--mock-pid", type=int, help="the mock upstream, for its CPU use")
    parser.add_argument("--streams", type=int, default=10_000, help="wanted (fd limit caps it)")
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--key")
    parser.add_argument("--timeout", type=float, default=150.0, help="opening and probing")
    parser.add_argument("--probe-only", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        import uvloop  # the client's own overhead per event as low as it goes
    except ImportError:  # pragma: no cover - the bench venv has it (the mock runs on it)
        runner = asyncio.run
    else:
        runner = uvloop.run
    if args.probe_only is not None:  # the child run_probes starts
        parts = urlsplit(args.url)
        run = Run(parts.hostname or "127.0.0.1", parts.port or 80, args.key, 1)  # one event
        deadline = time.monotonic() + args.timeout
        print("BENCH_JSON " + json.dumps(runner(probes(run, args.probe_only, deadline))))
        return 0
    if args.pid is None:
        parser.error("--pid is required")
    need = args.streams + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    print("BENCH_JSON " + json.dumps(runner(measure(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
