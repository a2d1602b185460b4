"""What every benchmark here shares: pinned child processes that are always stopped, wrk runs
parsed from the Lua ``done()`` line, readiness polling and the machine-load header.

Every child runs in its own process group (``start_new_session``) so stopping it stops what it
spawned too (uvicorn workers, LiteLLM's server); ``Procs`` stops them all on exit, on an
exception, on Ctrl-C and on SIGTERM/SIGHUP.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

import httpx

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
LUA_DIR = BENCH_DIR / "lua"
PYTHON = sys.executable
# The core a measured server gets, and the one the mock and the load generator share.
TARGET_CPU = "0"
LOAD_CPU = "1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinning_available() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(cmd: Sequence[str], cpu: str | None) -> list[str]:
    """``cmd`` under ``taskset -c cpu`` when the machine has 2+ cores and taskset."""
    if cpu is None or not pinning_available():
        return list(cmd)
    return ["taskset", "-c", cpu, *cmd]


def load_header() -> list[str]:
    """Lines describing when and under what load the figures were taken."""
    try:
        uptime = subprocess.run(
            ["uptime"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        uptime = "uptime unavailable"
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        commit = "?"
    cpu_model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    pin = (
        f"target on CPU {TARGET_CPU}, mock + load generator on CPU {LOAD_CPU} (taskset)"
        if pinning_available()
        else "NOT pinned (needs taskset and 2+ cores): figures are not per core"
    )
    return [
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, commit {commit}",
        f"machine: {os.cpu_count()} x {cpu_model}; {pin}",
        f"load at start: {uptime}",
    ]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None


class _Interrupted(BaseException):
    """SIGTERM/SIGHUP turned into an exception so ``finally`` blocks stop the children."""


class Procs:
    """Starts child processes in their own groups and stops every one of them on exit."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="nexus-bench-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []
        self._old_handlers: dict[int, object] = {}

    def __enter__(self) -> Procs:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.stop_all()
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        if isinstance(exc, _Interrupted):
            raise SystemExit(128 + signal.SIGTERM) from None

    @staticmethod
    def _on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted(signum)

    def start(
        self, name: str, cmd: Sequence[str], *, cpu: str | None = None,
        env: dict[str, str] | None = None, cwd: Path | None = None,
    ) -> Proc:  # fmt: skip
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                pinned(cmd, cpu), cwd=cwd or ROOT, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``."""
        if proc in self.procs:
            self.procs.remove(proc)
        pgid = proc.popen.pid  # its own session: the group id is its pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            proc.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # stragglers in the group (workers) too
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=5)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def wait_http(
    url: str, proc: Proc | None = None, timeout_s: float = 30.0, expect: int = 200,
    headers: dict[str, str] | None = None,
) -> None:  # fmt: skip
    """Poll ``url`` until it answers ``expect``; fail early when ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive:
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}"
            )
        try:
            resp = httpx.get(url, timeout=2.0, headers=headers)
            if resp.status_code == expect:
                return
            last = f"status {resp.status_code}: {resp.text[:200]}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    tail = f"\n{proc.log_tail()}" if proc is not None else ""
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f}s ({last}){tail}")


def wait_port(port: int, proc: Proc, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive:
            raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{proc.name} not listening on {port} after {timeout_s:.0f}s")


@dataclass
class LoadResult:
    """One measured run: throughput, latency percentiles (ms) and error counts."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "rps": round(self.rps, 1), "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3), "errors": self.errors, "requests": self.requests,
            "detail": self.detail,
        }  # fmt: skip


def ms(value: float) -> str:
    """Milliseconds for a table: three decimals below 1 ms, where wrk's microseconds matter."""
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def parse_bench_json(output: str) -> dict[str, object]:
    for line in output.splitlines():
        if line.startswith("BENCH_JSON "):
            parsed: dict[str, object] = json.loads(line.removeprefix("BENCH_JSON "))
            return parsed
    raise ValueError(f"no BENCH_JSON line in output:\n{output[-1500:]}")


def run_wrk(
    url: str, script: str, connections: int, duration_s: float, *,
    key: str | None = None, model: str = "bench", timeout_s: float = 10.0,
) -> LoadResult:  # fmt: skip
    """One wrk run (1 thread, pinned to the load CPU) with a ``bench/lua`` script."""
    env = {**os.environ, "BENCH_API_KEY": key or "", "BENCH_MODEL": model}
    cmd = pinned(
        [
            "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
            f"--timeout={timeout_s:.0f}s", "-s", str(LUA_DIR / script), url,
        ],
        LOAD_CPU,
    )  # fmt: skip
    out = _run_bounded(cmd, env, duration_s + timeout_s + 20)
    data = parse_bench_json(out)
    duration = float(str(data["duration_us"])) / 1e6
    requests = int(str(data["requests"]))
    kinds = ("connect", "read", "write", "status", "timeout")
    counts = {k: int(str(data[k])) for k in kinds}
    errors = sum(counts.values())
    detail = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
    if counts["status"]:
        detail = detail.replace("status", "non-2xx")
    return LoadResult(
        rps=requests / duration if duration else 0.0,
        p50_ms=float(str(data["p50_us"])) / 1000.0,
        p99_ms=float(str(data["p99_us"])) / 1000.0,
        errors=errors, requests=requests, detail=detail,
    )  # fmt: skip


def run_ttfe(
    url: str, connections: int, duration_s: float, *, key: str | None = None, api: str = "chat"
) -> LoadResult:
    """``bench/ttfe.py`` as a child pinned to the load CPU; p50/p99 are time to first event."""
    cmd = pinned(
        [
            PYTHON, "-m", "bench.ttfe", url, "--concurrency", str(connections),
            "--duration", str(duration_s), *(["--key", key] if key else []), "--api", api,
        ],
        LOAD_CPU,
    )  # fmt: skip
    out = _run_bounded(cmd, dict(os.environ), duration_s + 60)
    data = parse_bench_json(out)
    error = data.get("first_error")
    return LoadResult(
        rps=float(str(data["streams_per_s"])),
        p50_ms=float(str(data["ttfe_p50_ms"])),
        p99_ms=float(str(data["ttfe_p99_ms"])),
        errors=int(str(data["errors"])), requests=int(str(data["streams"])),
        detail=f"first error: {error}" if error else "",
    )  # fmt: skip


def _run_bounded(cmd: list[str], env: dict[str, str], timeout_s: float) -> str:
    """Run a load generator in its own group; kill the group if it overruns."""
    popen = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = popen.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.communicate()
        raise TimeoutError(f"{cmd[0]} ran past {timeout_s:.0f}s") from None
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
        raise
    return out.decode(errors="replace")


def start_mock(procs: Procs) -> tuple[str, Proc]:
    port = free_port()
    proc = procs.start(
        "mock", [PYTHON, "-m", "bench.mock_upstream", "--port", str(port)], cpu=LOAD_CPU
    )
    wait_port(port, proc)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/api/version", proc, timeout_s=10)
    return url, proc


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    start = time.monotonic()
    print(f"-- {title} ...", flush=True)
    yield
    print(f"   ({time.monotonic() - start:.1f}s)", flush=True)
