"""``make chaos``: break a real local stack under load and count what clients noticed (issue #12).

Everything runs as local processes on loopback ports it picks itself (nexus_testing): a real
etcd, the auth service, two template replicas, the gateway (auth on) and a slow SSE upstream.
Every experiment runs under bounded load (a rate, a request cap and a time cap) and records
requests, failures and times; the table at the end is what README.md's "Reliability" shows.
Everything started is stopped on every exit path (processes by PID, etcd never left stopped).

Experiments: rolling restart of both replicas; SIGKILL of a replica (removed within the lease
TTL); etcd SIGKILLed and etcd frozen (SIGSTOP), each longer than the TTL; an auth outage carried
by stale-if-error; the bad-input list; gateway SIGTERM with streams in flight (last: it ends
the gateway). Zero failures is the pass mark for all but the last, where every stream must end
with an SSE error event and a clean end of the body.

``--quick`` is the smaller version ``make test`` runs (tests/test_chaos.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from nexus_testing import EtcdServer, ServiceProcess, UvicornThread, wait_until

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "nx-chaos-admin-" + os.urandom(8).hex()
INTERNAL = "chaos-internal-" + os.urandom(8).hex()
TTL_S = 2


@dataclass(frozen=True)
class Plan:
    rate: float  # requests per second, all load threads together
    hold_s: float  # how long etcd stays dead/frozen and auth down (each > TTL)
    streams: int
    max_requests: int = 20_000


QUICK = Plan(rate=20, hold_s=TTL_S * 2 + 1, streams=3)
FULL = Plan(rate=50, hold_s=TTL_S * 5, streams=10)


@dataclass
class Row:
    experiment: str
    requests: int
    failures: int
    seconds: float
    note: str = ""
    must_be_zero: bool = True
    samples: list[str] = field(default_factory=list)


# -- load ---------------------------------------------------------------------------------


class Load:
    """Paced POSTs from threads; bounded by ``max_requests`` and ``max_s`` whatever happens."""

    def __init__(self, url: str, rate: float, max_requests: int, max_s: float = 120.0) -> None:
        self.url, self.max_requests, self.max_s = url, max_requests, max_s
        self.threads = 4
        self.interval = self.threads / rate
        self.sent = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(4)]
        self.started = 0.0

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(20)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        deadline = time.monotonic() + self.max_s
        with httpx.Client(timeout=15, headers=headers) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    if self.sent >= self.max_requests:
                        return
                    self.sent += 1
                began = time.monotonic()
                try:
                    resp = client.post(self.url, json={"message": "chaos"})
                    if resp.status_code != 200:
                        self._fail(f"{resp.status_code} {resp.text[:100]}")
                except httpx.HTTPError as exc:
                    self._fail(f"{type(exc).__name__}: {exc}"[:120])
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def _fail(self, what: str) -> None:
        with self._lock:
            self.failures.append(what)


# -- the stack ----------------------------------------------------------------------------


def slow_llm() -> Starlette:
    """An upstream whose chat streams run for a minute (the gateway SIGTERM experiment)."""
    doc = {"schema_version": "v1", "service": {"name": "slow", "version": "1.0.0"},
           "capabilities": {"streaming": True}, "models": [{"id": "slow-1", "owned_by": "chaos"}],
           "endpoints": [{"path": "/v1/chat/completions", "method": "POST",
                          "operation_id": "chat.completions", "streaming": True}]}  # fmt: skip

    async def meta(_: Request) -> JSONResponse:
        return JSONResponse(doc)

    async def ready(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ready", "checks": {}})

    async def chat(_: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            for n in range(600):
                yield f'data: {{"n": {n}}}\n\n'.encode()
                await asyncio.sleep(0.1)

        return StreamingResponse(events(), media_type="text/event-stream")

    chat_route = Route("/v1/chat/completions", chat, methods=["POST"])
    return Starlette(routes=[Route("/v1/metadata", meta), Route("/readyz", ready), chat_route])


class Stack:
    def __init__(self, tmp: Path, stack: ExitStack) -> None:
        self.tmp = tmp
        self.exits = stack
        self.etcd = EtcdServer(str(tmp / "etcd"))
        self.slow = UvicornThread(slow_llm())
        self.replicas: dict[str, ServiceProcess] = {}
        self.auth: ServiceProcess | None = None
        self.gateway: ServiceProcess | None = None
        stack.callback(self._stop_all)

    def start(self) -> None:
        self.etcd.start()
        self.slow.start()
        self.auth = self._auth().start(wait="/health")
        for name in ("a", "b"):
            self.replicas[name] = self._replica(name).start(wait="/health")
        self.gateway = self._gateway().start(wait="/readyz")
        self.wait_ready("template", 2)
        self.wait_ready("auth", 1)

    def base(self) -> dict[str, str]:
        return {"ETCD_ENDPOINTS": self.etcd.endpoint, "ETCD_LEASE_TTL_S": str(TTL_S),
                "LOG_LEVEL": "WARNING", "PRESTOP_DELAY_S": "1",
                "SHUTDOWN_GRACE_S": "5"}  # fmt: skip

    def _replica(self, name: str, port: int | None = None) -> ServiceProcess:
        env = {**self.base(), "SERVICE_NAME": "template", "SERVICE_INSTANCE_ID": f"template-{name}"}
        return ServiceProcess(ROOT / "services" / "template", env=env, port=port)

    def _auth(self, port: int | None = None) -> ServiceProcess:
        env = {**self.base(), "SERVICE_NAME": "auth", "NEXUS_ADMIN_API_KEY": ADMIN_KEY,
               "NEXUS_INTERNAL_TOKEN": INTERNAL, "SERVICE_INSTANCE_ID": "auth-chaos",
               "DATABASE_URL": f"sqlite+aiosqlite:///{self.tmp / 'auth.db'}",
               "JWT_SIGNING_KEY_FILE": str(self.tmp / "jwt.pem"),
               "PASSWORD_HASH_MEMORY_KIB": "8192", "PASSWORD_HASH_TIME_COST": "1"}  # fmt: skip
        return ServiceProcess(ROOT / "services" / "auth", env=env, port=port)

    def _gateway(self) -> ServiceProcess:
        env = {**self.base(), "OLLAMA_BASE_URL": "off", "GATEWAY_METRICS_PORT": "0",
               "NEXUS_INTERNAL_TOKEN": INTERNAL, "SLOW_BASE_URL": self.slow.url,
               "ETCD_HEARTBEAT_S": "0.5", "DISCOVERY_GRACE_PROBE_S": "0.5",
               "HEALTH_PROBE_INTERVAL_S": "1", "ETCD_RECONNECT_MAX_S": "0.5",
               "AUTH_CACHE_TTL_S": "1", "SHUTDOWN_GRACE_S": "2",
               "NEXUS_DEFAULT_RATE_LIMIT_RPM": "0"}  # fmt: skip
        return ServiceProcess(ROOT / "services" / "gateway", env=env)

    @property
    def url(self) -> str:
        assert self.gateway is not None
        return self.gateway.url

    def services(self) -> dict[str, Any]:
        resp = httpx.get(f"{self.url}/v1/services", timeout=5,
                         headers={"Authorization": f"Bearer {ADMIN_KEY}"})  # fmt: skip
        doc: dict[str, Any] = resp.json()
        return doc

    def ready(self, name: str) -> list[str]:
        try:
            doc = self.services()
        except (httpx.HTTPError, ValueError):
            return []
        for service in doc.get("data", []):
            if service["name"] == name:
                return [i["instance_id"] for i in service["instances"] if i["state"] == "ready"]
        return []

    def wait_ready(self, name: str, count: int, timeout_s: float = 30) -> None:
        wait_until(lambda: len(self.ready(name)) >= count, timeout_s, f"{count} ready {name}")

    def restart_replica(self, name: str, sig: int) -> None:
        old = self.replicas[name]
        old.signal(sig)
        old.wait(30)
        self.replicas[name] = self._replica(name, port=old.port).start(wait="/health")

    def _stop_all(self) -> None:
        if self.etcd.proc is not None and self.etcd.proc.poll() is None:
            os.kill(self.etcd.proc.pid, signal.SIGCONT)
        for proc in [self.gateway, *self.replicas.values(), self.auth]:
            if proc is not None:
                proc.stop()
        self.slow.stop()
        self.etcd.cleanup()


# -- experiments --------------------------------------------------------------------------


@contextmanager
def measured(rows: list[Row], name: str, load: Load, note: str = "") -> Iterator[Row]:
    row = Row(name, 0, 0, 0.0, note)
    with load:
        yield row
    row.requests, row.failures, row.seconds = load.sent, len(load.failures), load.seconds
    row.samples = load.failures[:5]
    rows.append(row)


def rolling_restart(stack: Stack, plan: Plan, rows: list[Row]) -> None:
    with measured(rows, "rolling restart, 2 replicas", _load(stack, plan)):
        for name in ("a", "b"):
            stack.restart_replica(name, signal.SIGTERM)
            stack.wait_ready("template", 2)


def replica_sigkill(stack: Stack, plan: Plan, rows: list[Row]) -> None:
    with measured(rows, "SIGKILL of a replica", _load(stack, plan)) as row:
        stack.replicas["b"].signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: "template-b" not in _listed(stack), TTL_S + 10, "removal")
        gone_s = time.monotonic() - killed
        row.note = f"removed {gone_s:.1f} s after the kill (TTL {TTL_S} s)"
        if gone_s > TTL_S + 2:
            row.samples.append(f"removal took {gone_s:.1f} s")
        stack.replicas["b"].wait(10)
        old = stack.replicas["b"]
        stack.replicas["b"] = stack._replica("b", port=old.port).start(wait="/health")
        stack.wait_ready("template", 2)


def etcd_sigkill(stack: Stack, plan: Plan, rows: list[Row]) -> None:
    note = f"etcd dead {plan.hold_s:g} s (TTL {TTL_S} s)"
    with measured(rows, "etcd SIGKILL", _load(stack, plan), note):
        assert stack.etcd.proc is not None
        os.kill(stack.etcd.proc.pid, signal.SIGKILL)
        stack.etcd.proc.wait(10)
        stack.etcd.proc = None
        time.sleep(plan.hold_s)
        stack.etcd.start()
        wait_until(lambda: stack.services()["etcd"]["connected"], 30, "etcd reconnect")
        stack.wait_ready("template", 2)


def etcd_freeze(stack: Stack, plan: Plan, rows: list[Row]) -> None:
    with measured(rows, "etcd frozen (SIGSTOP)", _load(stack, plan)) as row:
        assert stack.etcd.proc is not None
        pid = stack.etcd.proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            frozen = time.monotonic()
            wait_until(lambda: not stack.services()["etcd"]["connected"], 10, "freeze visible")
            row.note = f"frozen {plan.hold_s:g} s, visible after {time.monotonic() - frozen:.1f} s"
            time.sleep(plan.hold_s)
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_until(lambda: stack.services()["etcd"]["connected"], 30, "etcd answers")
        time.sleep(TTL_S * 2)  # expiries and re-registrations land in here
        stack.wait_ready("template", 2)


def auth_outage(stack: Stack, plan: Plan, rows: list[Row]) -> None:
    note = f"auth SIGKILLed {plan.hold_s:g} s; key admitted from the stale-if-error window"
    with measured(rows, "auth outage", _load(stack, plan), note):
        assert stack.auth is not None
        stack.auth.signal(signal.SIGKILL)
        stack.auth.wait(10)
        time.sleep(plan.hold_s)
        stack.auth = stack._auth(port=stack.auth.port).start(wait="/health")
        stack.wait_ready("auth", 1)


BAD_INPUTS: list[tuple[str, str, bytes]] = [
    ("POST", "/services/tem%70late/v1/echo", b'{"message":"x"}'),
    ("POST", "/services/te%2Fmplate/v1/echo", b'{"message":"x"}'),
    ("POST", "/services/template/../auth/v1/echo", b'{"message":"x"}'),
    ("POST", "/v1/chat/completions", b'{"model":"' + b"m" * 1_000_000 + b'","messages":[]}'),
    ("POST", "/v1/" + "p" * 4000, b"{}"),
    ("POST", "/v1/echo", b"{not json"),
    ("GET", "/v1/echo", b""),
    ("POST", "/services/template/v1/echo/%2e%2e", b'{"message":"x"}'),
    ("DELETE", "/v1/chat/completions", b""),
]


def bad_inputs(stack: Stack, rows: list[Row]) -> None:
    started, failures = time.monotonic(), []
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
    with httpx.Client(timeout=30, headers=headers) as client:
        for method, path, body in BAD_INPUTS:
            request = client.build_request(method, stack.url + path, content=body)
            request.url = request.url.copy_with(raw_path=path.encode())
            resp = client.send(request)
            too_long = len(resp.content) > 2000
            if resp.status_code >= 500 or too_long:
                failures.append(f"{method} {path[:40]}: {resp.status_code} ({len(resp.content)} B)")
    rows.append(Row("bad inputs (4xx, short messages)", len(BAD_INPUTS), len(failures),
                    time.monotonic() - started, samples=failures))  # fmt: skip


def gateway_sigterm(stack: Stack, plan: Plan, rows: list[Row]) -> None:
    started = time.monotonic()
    assert stack.gateway is not None
    gw = stack.gateway
    results: list[str] = []
    begun = threading.Barrier(plan.streams + 1)

    def stream() -> None:
        body = {"model": "slow-1", "stream": True, "messages": []}
        last = ""
        try:
            headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
            with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body,
                              headers=headers, timeout=30) as resp:  # fmt: skip
                for i, line in enumerate(resp.iter_lines()):
                    if i == 0:
                        begun.wait(15)
                    last = line or last
            ok = "service_unavailable" in last
            results.append("ok" if ok else f"ended without an error event: {last[:80]}")
        except (httpx.HTTPError, threading.BrokenBarrierError) as exc:
            results.append(f"cut: {type(exc).__name__}")

    threads = [threading.Thread(target=stream) for _ in range(plan.streams)]
    for thread in threads:
        thread.start()
    begun.wait(15)
    gw.signal(signal.SIGTERM)
    saw_503 = _poll_readyz_503(gw.url)
    code = gw.wait(30)
    for thread in threads:
        thread.join(15)
    log = gw.output()
    failures = [r for r in results if r != "ok"]
    if "Traceback" in log:
        failures.append("a traceback in the gateway log")
    if not saw_503:
        failures.append("readyz never answered 503 before the listener closed")
    lines = log.count("shutdown grace over")
    note = f"exit {code}; {lines} log lines for {plan.streams} streams"
    if lines != plan.streams:
        failures.append(f"{lines} 'shutdown grace over' lines; log tail: {log[-600:]}")
    rows.append(Row(f"gateway SIGTERM, {plan.streams} streams", plan.streams, len(failures),
                    time.monotonic() - started, note, samples=failures))  # fmt: skip


def _poll_readyz_503(url: str) -> bool:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 503:
                return True
        except httpx.HTTPError:
            return False
        time.sleep(0.05)
    return False


def _listed(stack: Stack) -> list[str]:
    try:
        doc = stack.services()
    except (httpx.HTTPError, ValueError):
        return ["?"]
    return [i["instance_id"] for s in doc["data"] for i in s["instances"]]


def _load(stack: Stack, plan: Plan) -> Load:
    return Load(f"{stack.url}/v1/echo", plan.rate, plan.max_requests)


# -- main ---------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    lines = ["| experiment | requests | failures | seconds | note |", "|---|---:|---:|---:|---|"]
    for r in rows:
        cells = (r.experiment, r.requests, r.failures, f"{r.seconds:.1f}", r.note)
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def run(plan: Plan) -> list[Row]:
    rows: list[Row] = []
    steps: list[Callable[[Stack], None]] = [
        lambda s: rolling_restart(s, plan, rows),
        lambda s: replica_sigkill(s, plan, rows),
        lambda s: etcd_sigkill(s, plan, rows),
        lambda s: etcd_freeze(s, plan, rows),
        lambda s: auth_outage(s, plan, rows),
        lambda s: bad_inputs(s, rows),
        lambda s: gateway_sigterm(s, plan, rows),
    ]
    with tempfile.TemporaryDirectory(prefix="nexus-chaos-") as tmp, ExitStack() as exits:
        stack = Stack(Path(tmp), exits)
        stack.start()
        for step in steps:
            step(stack)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smaller version make test runs")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = run(QUICK if args.quick else FULL)
    print(table(rows))
    for row in rows:
        for sample in row.samples:
            print(f"  {row.experiment}: {sample}")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=2))
    failed = [r for r in rows if r.failures and r.must_be_zero]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
