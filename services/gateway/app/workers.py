"""``python -m app.workers``: the gateway as N worker processes behind one listening port.

    cd services/gateway && python -m app.workers [--host 0.0.0.0] [--port 8800] [--workers N]

``GATEWAY_WORKERS`` (0, the default: one per CPU this process may use: its affinity, capped
by a cgroup CPU quota)
workers, each a whole gateway (``app.main:app`` on uvicorn, asyncio's loop as in the image)
with its own discovery watch, upstream pool, prober and auth cache. The supervisor:

- **one port, N sockets**: it opens one listening socket per worker on the same address with
  ``SO_REUSEPORT`` and hands each worker its own (``--worker <fd>``). The kernel spreads new
  connections over the sockets by their address hash, so a burst is shared out instead of
  being taken by whichever worker wakes first (one shared socket lets one busy loop accept a
  whole burst). The supervisor keeps its copy of each socket, so connections queued for a
  worker that crashed wait for its replacement instead of being reset.
- **supervised**: a worker that exits is replaced (backoff from 0.1 s to 10 s while it keeps
  dying young); ``nexus_gateway_worker_restarts_total`` counts them. One that dies young
  ``GIVE_UP_AFTER`` times in a row cannot start at all: the supervisor stops and exits 1, so a
  container restart policy or the operator sees it instead of a silent loop.
- **drain**: SIGTERM or SIGINT closes the supervisor's copies of the sockets and passes
  SIGTERM to every worker, which drains as a lone gateway does (the kit's drain: readiness
  503, in-flight requests finish within ``SHUTDOWN_GRACE_S``); workers still running
  ``SHUTDOWN_GRACE_S`` + ``STOP_MARGIN_S`` later are killed. A worker dies with the
  supervisor (``PR_SET_PDEATHSIG``), so none is orphaned.
- **shared limits**: without Redis (``RATE_LIMIT_STORAGE_URL`` empty or ``memory://``), the
  workers count in one table in shared memory (``sharedlimits.py``), so limits stay exact.
- **one metrics view**: each worker serves its registry on a unix socket; the supervisor serves
  their sum on ``GATEWAY_METRICS_PORT`` (``aggregate.py``).
- **OS limits**: checked once at start (``oslimits.py``), the soft fd limit raised for all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from nexus_kit import get_logger
from nexus_kit.logging import configure_logging

from . import oslimits, sharedlimits
from .aggregate import AggregateServer, WorkerView
from .settings import GatewaySettings, load_gateway_settings

log = get_logger("nexus.gateway.workers")
SERVICE_DIR = Path(__file__).resolve().parents[1]
STOP_MARGIN_S = 15.0  # beyond SHUTDOWN_GRACE_S: a pre-stop readiness window, lifespan shutdown
YOUNG_S = 10.0  # a worker that dies younger than this is restarted with growing backoff
GIVE_UP_AFTER = 6  # young deaths in a row: the gateway cannot start; exit 1 so it is seen
PR_SET_PDEATHSIG = 1
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def worker_count(setting: int, cpu_max: Path = CPU_MAX) -> int:
    """``GATEWAY_WORKERS``, or the CPUs this process may use: its affinity (cpusets, taskset),
    capped by a cgroup v2 CPU quota (``docker --cpus``, a Kubernetes CPU limit), rounded up."""
    if setting > 0:
        return setting
    cpus = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError, ValueError):
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    return cpus


def listen_sockets(host: str, port: int, count: int, backlog: int) -> list[socket.socket]:
    """``count`` listening sockets on one address, the kernel balancing between them."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise SystemExit(
            f"gateway: cannot listen on {host}:{port} ({exc.strerror}); is another process "
            "using the port? Set SERVICE_PORT (or --port) to a free one."
        ) from exc
    return sockets


@dataclass
class Worker:
    index: int
    sock: socket.socket
    metrics_socket: str
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    quick_deaths: int = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


@dataclass
class Supervisor:
    settings: GatewaySettings
    host: str
    port: int
    count: int
    workers: list[Worker] = field(default_factory=list)
    restarts: int = 0
    failed: bool = False  # a worker kept dying young: exit 1
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    env: dict[str, str] = field(default_factory=dict)

    async def run(self) -> int:
        s = self.settings
        oslimits.warn_at_start(s)
        rundir = Path(
            tempfile.mkdtemp(prefix="nexus-gateway-", dir=sharedlimits.default_table_dir())
        )
        aggregate = AggregateServer(
            s.gateway_metrics_host, s.gateway_metrics_port, self.views, lambda: self.restarts
        )
        try:
            self.env = self._worker_env(rundir)
            sockets = listen_sockets(self.host, self.port, self.count, s.gateway_backlog)
            self.workers = [
                Worker(i, sock, str(rundir / f"metrics-{i}.sock")) for i, sock in enumerate(sockets)
            ]
            if s.gateway_metrics_port:
                await aggregate.start()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stopping.set)
            log.info("gateway workers starting", workers=self.count, port=self.port)
            watchers = [asyncio.create_task(self._keep(w)) for w in self.workers]
            await self.stopping.wait()
            await self._stop_all()
            for task in watchers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().remove_signal_handler(sig)
            await aggregate.stop()
            for worker in self.workers:
                worker.sock.close()
            shutil.rmtree(rundir, ignore_errors=True)
        return 1 if self.failed else 0

    def views(self) -> list[WorkerView]:
        return [WorkerView(w.index, w.metrics_socket, w.alive) for w in self.workers]

    def _worker_env(self, rundir: Path) -> dict[str, str]:
        env = dict(os.environ)
        url = self.settings.rate_limit_storage_url
        if not url.startswith(("redis://", "rediss://")):
            table = sharedlimits.create_table(rundir / "limits.table")
            env["RATE_LIMIT_STORAGE_URL"] = sharedlimits.SCHEME + str(table)
        env["GATEWAY_METRICS_PORT"] = "0"
        env["GATEWAY_SUPERVISOR_PID"] = str(os.getpid())
        return env

    async def _spawn(self, worker: Worker) -> asyncio.subprocess.Process:
        fd = worker.sock.fileno()
        env = {
            **self.env,
            "GATEWAY_METRICS_SOCKET": worker.metrics_socket,
            "SERVICE_INSTANCE_ID": f"{self.settings.instance_id}-w{worker.index}",
        }
        with contextlib.suppress(FileNotFoundError):
            os.unlink(worker.metrics_socket)
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.workers", "--worker", str(fd),
            pass_fds=(fd,), env=env, cwd=SERVICE_DIR,
        )  # fmt: skip

    async def _keep(self, worker: Worker) -> None:
        """Run the worker; replace it whenever it exits, until the supervisor stops."""
        while not self.stopping.is_set():
            worker.started = time.monotonic()
            worker.proc = await self._spawn(worker)
            if self.stopping.is_set():  # stopped while it was being started: drain it too
                worker.proc.send_signal(signal.SIGTERM)
            code = await worker.proc.wait()
            if self.stopping.is_set():
                return
            young = time.monotonic() - worker.started < YOUNG_S
            worker.quick_deaths = worker.quick_deaths + 1 if young else 0
            if worker.quick_deaths >= GIVE_UP_AFTER:
                log.error("gateway worker keeps exiting at start; stopping the gateway",
                          worker=worker.index, code=code, tries=worker.quick_deaths)  # fmt: skip
                self.failed = True
                self.stopping.set()
                return
            delay = min(0.1 * 2 ** max(worker.quick_deaths - 1, 0), 10.0)
            self.restarts += 1
            log.warning("gateway worker exited; replacing it",
                        worker=worker.index, code=code, after_s=delay)  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)

    async def _stop_all(self) -> None:
        for worker in self.workers:
            worker.sock.close()  # the workers' own copies keep accepting while they drain
        running = [w.proc for w in self.workers if w.proc is not None and w.alive]
        log.info("gateway workers draining", workers=len(running))
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        budget = self.settings.shutdown_grace_s + STOP_MARGIN_S
        waits = [asyncio.create_task(proc.wait()) for proc in running]
        if waits:
            _, late = await asyncio.wait(waits, timeout=budget)
            for proc in running:
                if proc.returncode is None:
                    log.warning("gateway worker still running after the grace; killing it")
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            if late:
                await asyncio.wait(late, timeout=5.0)


# ------------------------------------------------------------------------- the worker side


def _die_with_parent(parent: int) -> None:
    """Linux: SIGTERM this worker when the supervisor dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before prctl took effect
        raise SystemExit("gateway worker: the supervisor is gone")


def run_worker(fd: int) -> None:
    import uvicorn

    _die_with_parent(int(os.environ.get("GATEWAY_SUPERVISOR_PID", os.getppid())))
    sock = socket.socket(fileno=fd)
    from .main import app  # built from the environment the supervisor passed

    settings = app.state.kit.settings
    # proxy_headers off: nothing in the gateway reads the client address, and uvicorn's
    # X-Forwarded-* middleware is one more coroutine held by every open stream (issue 14).
    config = uvicorn.Config(
        app, loop="asyncio", log_config=None, lifespan="on", proxy_headers=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 1,
    )  # fmt: skip
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The Nexus gateway as N worker processes.")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, help="default: SERVICE_PORT (8800)")
    parser.add_argument("--workers", type=int, help="default: GATEWAY_WORKERS (0: one per CPU)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # internal: a worker's fd
    args = parser.parse_args(argv)
    if args.worker is not None:
        run_worker(args.worker)
        return 0
    settings = load_gateway_settings()
    configure_logging(settings.log_level, settings.service_name)
    count = worker_count(args.workers if args.workers is not None else settings.gateway_workers)
    port = args.port if args.port is not None else settings.service_port
    return asyncio.run(Supervisor(settings, args.host, port, count).run())


if __name__ == "__main__":
    sys.exit(main())
