"""Several hosts, for real: network namespaces joined by veth pairs to a bridge (issue #12).

Layout (all namespaces created here, deleted on every exit path):

    nx12-<id>-br   a bridge joining the three hosts (10.12.0.0/24)
    nx12-<id>-h1   10.12.0.1: etcd member m1, the gateway (:8800)
    nx12-<id>-h2   10.12.0.2: etcd member m2, service "alpha" (a template copy, :9000)
    nx12-<id>-h3   10.12.0.3: etcd member m3, service "beta" (a template copy, :9000)

Each service advertises its own host address (``SERVICE_ADVERTISE_URL``). Clients run inside
h1 (``tests/netns_client.py``). Proven, in order: cross-host discovery and routing; one etcd
member killed changes nothing (zero failed requests); h3's link set down: beta is unrouted
within the lease TTL (plus one probe) with zero failed requests to alpha; a second member
killed (no quorum): the gateway shows etcd as not answering and keeps serving its last table.
Fixed ports are used only inside these private namespaces, where nothing else can bind.

Needs root (network namespaces): runs under ``CI=true`` (CI is root), skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nexus_testing import etcd_binary

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "tests" / "netns_client.py"
TTL_S = 3
SUBNET = "10.12.0"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.environ.get("CI") != "true" or os.geteuid() != 0,
        reason="multi-host test: needs root for network namespaces; runs under CI=true",
    ),
]


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@dataclass
class Net:
    tag: str
    made: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)

    def ns(self, name: str) -> str:
        return f"nx12-{self.tag}-{name}"

    def build(self) -> None:
        br = self.ns("br")
        self._add(br)
        sh("ip", "-n", br, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", br, "link", "set", "br0", "up")
        for i in (1, 2, 3):
            host = self.ns(f"h{i}")
            self._add(host)
            inner, outer = f"nx12{self.tag}h{i}", f"nx12{self.tag}b{i}"
            sh("ip", "link", "add", inner, "type", "veth", "peer", "name", outer)
            sh("ip", "link", "set", inner, "netns", host)
            sh("ip", "link", "set", outer, "netns", br)
            sh("ip", "-n", br, "link", "set", outer, "master", "br0")
            sh("ip", "-n", br, "link", "set", outer, "up")
            sh("ip", "-n", host, "addr", "add", f"{SUBNET}.{i}/24", "dev", inner)
            sh("ip", "-n", host, "link", "set", inner, "up")
            sh("ip", "-n", host, "link", "set", "lo", "up")

    def _add(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.made.append(name)

    def unplug(self, i: int) -> None:
        sh("ip", "-n", self.ns("br"), "link", "set", f"nx12{self.tag}b{i}", "down")

    def spawn(self, host: str, args: list[str], cwd: Path, env: dict[str, str]) -> int:
        fd, log = tempfile.mkstemp(prefix="nx12-", suffix=".log")
        with os.fdopen(fd, "wb") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(host), *args], cwd=cwd, stdout=out,
                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            )  # fmt: skip
        self.procs.append(proc)
        self.logs[proc.pid] = Path(log)
        return proc.pid

    def kill(self, pid: int, sig: int = signal.SIGKILL) -> None:
        for proc in self.procs:
            if proc.pid == pid and proc.poll() is None:
                proc.send_signal(sig)
                proc.wait(15)

    def client(self, *args: str, timeout: float = 60) -> dict[str, Any]:
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns("h1"), sys.executable, str(CLIENT), *args],
            capture_output=True, text=True, timeout=timeout, check=True,
        )  # fmt: skip
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def client_in_background(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns("h1"), sys.executable, str(CLIENT), *args],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.procs.append(proc)  # type: ignore[arg-type]  # stopped with the rest on exit
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        for log in self.logs.values():
            log.unlink(missing_ok=True)


@pytest.fixture
def net() -> Iterator[Net]:
    net = Net(secrets.token_hex(2))
    with ExitStack() as stack:
        stack.callback(net.cleanup)  # namespaces go whatever happens below
        net.build()
        yield net


def start_etcd(net: Net, data: Path) -> dict[int, int]:
    cluster = ",".join(f"m{i}=http://{SUBNET}.{i}:2380" for i in (1, 2, 3))
    pids = {}
    for i in (1, 2, 3):
        ip = f"{SUBNET}.{i}"
        args = [etcd_binary(), "--name", f"m{i}", "--data-dir", str(data / f"m{i}"),
                "--listen-client-urls", f"http://{ip}:2379",
                "--advertise-client-urls", f"http://{ip}:2379",
                "--listen-peer-urls", f"http://{ip}:2380",
                "--initial-advertise-peer-urls", f"http://{ip}:2380",
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"nx12-{net.tag}", "--log-level", "error"]  # fmt: skip
        pids[i] = net.spawn(f"h{i}", args, ROOT, {})
    return pids


def wait(net: Net, what: str, check: Any, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


def services(net: Net) -> dict[str, Any]:
    doc: dict[str, Any] = net.client("get", f"http://{SUBNET}.1:8800/v1/services")["body"]
    return doc


def ready(net: Net) -> dict[str, list[str]]:
    try:
        doc = services(net)
    except (subprocess.SubprocessError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {s["name"]: [i["base_url"] for i in s["instances"] if i["state"] == "ready"]
            for s in doc.get("data", [])}  # fmt: skip


def test_three_hosts_etcd_cluster_gateway_and_services(net: Net, tmp_path: Path) -> None:
    members = start_etcd(net, tmp_path)
    endpoints = ",".join(f"http://{SUBNET}.{i}:2379" for i in (1, 2, 3))
    wait(net, "etcd quorum", lambda: net.client("get", f"http://{SUBNET}.1:2379/health")
         ["body"] == {"health": "true", "reason": ""})  # fmt: skip
    base = {"ETCD_ENDPOINTS": endpoints, "ETCD_LEASE_TTL_S": str(TTL_S), "LOG_LEVEL": "WARNING",
            "PRESTOP_DELAY_S": "0"}  # fmt: skip
    template = ROOT / "services" / "template"
    for i, name in ((2, "alpha"), (3, "beta")):
        copy = tmp_path / name
        shutil.copytree(template, copy, ignore=shutil.ignore_patterns("tests", ".env",
                                                                     "__pycache__"))  # fmt: skip
        env = {**base, "SERVICE_NAME": name, "SERVICE_ADVERTISE_URL": f"http://{SUBNET}.{i}:9000"}
        uvicorn = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "0.0.0.0",
                   "--port", "9000"]  # fmt: skip
        net.spawn(f"h{i}", uvicorn, copy, env)
    gw_env = {**base, "OLLAMA_BASE_URL": "off", "GATEWAY_METRICS_PORT": "0",
              "NEXUS_AUTH_ENABLED": "false", "ETCD_HEARTBEAT_S": "0.5",
              "DISCOVERY_GRACE_PROBE_S": "0.5", "HEALTH_PROBE_INTERVAL_S": "1",
              "ETCD_RECONNECT_MAX_S": "0.5", "UPSTREAM_CONNECT_TIMEOUT_S": "1"}  # fmt: skip
    gw_cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "0.0.0.0",
              "--port", "8800"]  # fmt: skip
    net.spawn("h1", gw_cmd, ROOT / "services" / "gateway", gw_env)

    # 1. Cross-host discovery and routing, each service at its own host's address.
    found = wait(net, "both services routed", lambda: (r := ready(net)).get("alpha")
                 and r.get("beta") and r)  # fmt: skip
    assert found["alpha"] == [f"http://{SUBNET}.2:9000"]
    assert found["beta"] == [f"http://{SUBNET}.3:9000"]
    alpha = f"http://{SUBNET}.1:8800/services/alpha/v1/echo"
    beta = f"http://{SUBNET}.1:8800/services/beta/v1/echo"
    rows: list[tuple[str, int, int, str]] = []
    for url, name in ((alpha, "alpha"), (beta, "beta")):
        result = net.client("load", url, "2", "10")
        assert result["failures"] == []
        assert result["by"] == {name: result["sent"]}
        rows.append((f"cross-host routing: {name}", result["sent"], 0, ""))

    # 2. One etcd member killed (m3): nothing changes.
    net.kill(members[3])
    for url in (alpha, beta):
        result = net.client("load", url, "3", "20")
        assert result["failures"] == [], result["failures"][:3]
        rows.append((f"etcd m3 killed: {url.split('/')[4]}", result["sent"], 0, ""))
    assert services(net)["etcd"]["connected"] is True

    # 3. h3 unplugged: beta is unrouted within the TTL (+ one probe); alpha loses nothing.
    loading = net.client_in_background("load", alpha, str(TTL_S + 5), "20")
    net.unplug(3)
    unplugged = time.monotonic()
    # Unrouted: no ready instance (the active probe fails first); removed: its lease expired
    # and the lease grace's probe failed. Bounds, not speed targets (polling adds ~1 s).
    wait(net, "beta unrouted", lambda: not ready(net).get("beta"), timeout_s=TTL_S + 8)
    unrouted_s = time.monotonic() - unplugged
    wait(net, "beta removed", lambda: "beta" not in ready(net), timeout_s=TTL_S + 8)
    removed_s = time.monotonic() - unplugged
    out, _ = loading.communicate(timeout=60)
    result = json.loads(out)
    assert result["failures"] == [], result["failures"][:3]
    # The lease (TTL) runs out 2-3 s after the unplug; the instance then goes at once when its
    # last probe had already timed out, else after the grace's own probe times out (one more
    # probe timeout). Seen: 3.5-5.1 s with TTL 3 s. A bound against hanging, not a speed target.
    assert unrouted_s < TTL_S + 3
    rows.append(("h3 unplugged: alpha under load", result["sent"], len(result["failures"]),
                 f"beta unrouted after {unrouted_s:.1f} s, removed after {removed_s:.1f} s "
                 f"(TTL {TTL_S} s)"))  # fmt: skip
    gone = net.client("load", beta, "1", "2")["failures"]
    assert gone
    assert all(f.startswith("503 ") for f in gone), gone  # departed: 503, not 404

    # 4. A second member killed (m2): no quorum. etcd shows as not answering; the last table
    #    keeps serving alpha.
    net.kill(members[2])
    wait(net, "etcd shown stale", lambda: services(net)["etcd"]["connected"] is False)
    result = net.client("load", alpha, "4", "20")
    assert result["failures"] == [], result["failures"][:3]
    assert result["by"] == {"alpha": result["sent"]}
    rows.append(("etcd m2+m3 killed (no quorum): alpha", result["sent"], 0, "last table serves"))
    print("\n| step | requests | failures | note |\n|---|---:|---:|---|")
    for step, sent, failed, note in rows:
        print(f"| {step} | {sent} | {failed} | {note} |")
