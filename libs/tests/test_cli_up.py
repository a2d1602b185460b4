"""``nexus up`` end to end: the real command in a subprocess, real etcd, real uvicorn services.

Every port (etcd's and each service's) and the state folder are moved to free ones / a temp
folder through the environment, so these tests never meet a developer's running stack.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from nexus_cli.newservice import SKIP, create_service
from nexus_cli.stack import port_is_free
from nexus_testing import EtcdServer, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
NEXUS = Path(sys.executable).with_name("nexus")  # the installed entry point `make up` runs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process checks read /proc"),
]


class Up:
    """One ``nexus up`` run: its process and every line it printed, collected by a thread."""

    def __init__(self, root: Path, args: tuple[str, ...], env: dict[str, str]) -> None:
        command = [str(NEXUS)] if NEXUS.is_file() else [sys.executable, "-m", "nexus_cli"]
        self.proc = subprocess.Popen(
            [*command, "up", "--root", str(root), *args],
            env=env,
            stdin=subprocess.DEVNULL,  # no terminal, no stdin: as in CI
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in line for line in list(self.lines)):
                return
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not printed; output:\n{self.output}")

    def row(self, name: str) -> list[str]:
        """The start-up table's row for ``name``: [name, url, state]."""
        for line in self.lines:
            cells = line.split(maxsplit=2)
            if line.startswith("  ") and cells[:1] == [name] and cells[1].startswith("http"):
                return cells
        raise AssertionError(f"no table row for {name}; output:\n{self.output}")

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        self._reader.join(10)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # its children get SIGTERM from the kernel (parent-death signal)
                self.proc.wait()


@pytest.fixture
def launch() -> Iterator[Callable[..., Up]]:
    runs: list[Up] = []

    def start(root: Path, *args: str, env: dict[str, str]) -> Up:
        runs.append(Up(root, args, env))
        return runs[-1]

    yield start
    for run in runs:
        run.close()


def stack_env(tmp_path: Path, **ports: int) -> dict[str, str]:
    """Our environment, less anything that would reach a developer's stack or keys."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SERVICE_", "NEXUS_", "ETCD_")) and not k.endswith("_PORT")
    }
    env.update(
        NEXUS_STATE_DIR=str(tmp_path / "state"),
        NEXUS_ETCD_PORT=str(free_port()),
        NEXUS_ETCD_PEER_PORT=str(free_port()),
    )
    env.update({name: str(port) for name, port in ports.items()})
    return env


def etcd_keys(env: dict[str, str], prefix: str) -> list[str]:
    """Keys under ``prefix`` through etcd's JSON gateway (``prefix`` ends in '/')."""
    body = {
        "key": base64.b64encode(prefix.encode()).decode(),
        "range_end": base64.b64encode(prefix[:-1].encode() + b"0").decode(),  # '/' + 1
        "keys_only": True,
    }
    url = f"http://127.0.0.1:{env['NEXUS_ETCD_PORT']}/v3/kv/range"
    kvs = httpx.post(url, json=body, timeout=5).json().get("kvs", [])
    return [base64.b64decode(kv["key"]).decode() for kv in kvs]


def wait_for_key(env: dict[str, str], prefix: str, timeout_s: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if keys := etcd_keys(env, prefix):
            return keys
        time.sleep(0.1)
    raise AssertionError(f"no key under {prefix} after {timeout_s}s")


def proc_table() -> dict[int, tuple[int, int, int]]:
    """pid → (parent pid, process group, session) of every process, from /proc."""
    table: dict[int, tuple[int, int, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # it exited while we looked
            fields = stat.rsplit(")", 1)[1].split()  # the name may hold spaces or ')'
            if fields[0] != "Z":  # a zombie has exited; only its reaper has not looked yet
                table[int(entry.name)] = (int(fields[1]), int(fields[2]), int(fields[3]))
    return table


def descendants(pid: int) -> dict[int, tuple[int, int, int]]:
    table = proc_table()
    found: dict[int, tuple[int, int, int]] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, row in table.items():
            if row[0] == parent and child not in found:
                found[child] = row
                frontier.append(child)
    return found


def cmdline(pid: int) -> str:
    return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()


def assert_nothing_left(family: dict[int, tuple[int, int, int]]) -> None:
    """None of those processes, and nothing in their process groups, is still there."""
    groups = {row[1] for row in family.values()}
    table = proc_table()
    assert not set(family) & set(table), "a child of nexus up is still running"
    assert not [pid for pid, row in table.items() if row[1] in groups], "a process group lives on"


def wait_until_gone(family: dict[int, tuple[int, int, int]], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while set(family) & set(proc_table()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert_nothing_left(family)


def copy_template(root: Path, name: str) -> Path:
    target = root / "services" / name
    shutil.copytree(REPO / "services" / "template", target, ignore=SKIP)
    return target


def test_up_starts_template_registers_it_and_stops_clean(
    tmp_path: Path, launch: Callable[..., Up]
) -> None:
    env = stack_env(tmp_path, TEMPLATE_PORT=free_port())
    url = f"http://127.0.0.1:{env['TEMPLATE_PORT']}"
    up = launch(REPO, "--only", "template", env=env)

    up.wait_for("Ctrl-C stops everything.")
    assert up.row("etcd") == ["etcd", f"http://127.0.0.1:{env['NEXUS_ETCD_PORT']}", "ready"]
    assert up.row("template") == ["template", url, "ready"]
    assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    assert wait_for_key(env, "/nexus/services/template/")
    key = (tmp_path / "state" / "dev-admin-key").read_text().strip()
    assert key.startswith("nx-")
    assert f"Dev API key      {key}" in up.output
    assert "\x1b[" not in up.output  # not a terminal: no colour
    assert any(line.startswith("template | ") for line in up.lines)  # its log, prefixed

    family = descendants(up.proc.pid)
    commands = {pid: cmdline(pid) for pid in family}
    etcd = next(pid for pid, line in commands.items() if "--data-dir" in line)
    service = next(pid for pid, line in commands.items() if "uvicorn" in line)
    ours = proc_table()[up.proc.pid]
    assert family[etcd][2] != ours[2]  # etcd: its own session, out of the terminal's reach
    assert family[service][1] != ours[1]  # the service: its own process group

    assert up.stop(signal.SIGTERM) == 0
    assert_nothing_left(family)
    for port in ("TEMPLATE_PORT", "NEXUS_ETCD_PORT", "NEXUS_ETCD_PEER_PORT"):
        assert port_is_free(int(env[port])), port
    # The service deleted its key while etcd was still up: etcd stops last.
    assert "deregistered" in up.output
    assert up.lines[-1].endswith("| stopped")


def test_taken_port_and_missing_service_each_get_one_line(
    tmp_path: Path, launch: Callable[..., Up]
) -> None:
    root = tmp_path / "repo"
    copy_template(root, "template")
    (root / "pyproject.toml").write_text("")
    create_service(root, "okay")
    create_service(root, "blocked")
    (root / "services" / "pending").mkdir()  # a service someone has not written yet
    env = stack_env(tmp_path, OKAY_PORT=free_port(), BLOCKED_PORT=free_port())
    env["NEXUS_ADMIN_API_KEY"] = "nx-from-env"
    blocked = int(env["BLOCKED_PORT"])

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", blocked))
        holder.listen()
        up = launch(root, "--only", "pending,okay,blocked", env=env)
        up.wait_for("Ctrl-C stops everything.")

    taken = [line for line in up.lines if f"port {blocked} is already in use" in line]
    assert taken == [
        f"nexus   | blocked: port {blocked} is already in use on 127.0.0.1; not started"
        " (stop what holds it, or set BLOCKED_PORT=<free port>)"
    ]
    assert "nexus   | pending: services/pending/app/main.py does not exist (yet); skipped" in (
        up.lines
    )
    assert up.row("okay")[2] == "ready"
    assert up.row("blocked")[2] == f"port {blocked} in use"
    assert wait_for_key(env, "/nexus/services/okay/")
    assert "Dev API key      (yours, not shown)  (admin; NEXUS_ADMIN_API_KEY" in up.output
    assert "nx-from-env" not in up.output  # the operator's key is never printed
    assert (tmp_path / "state" / "dev-admin-key").read_text().strip() == "nx-from-env"

    family = descendants(up.proc.pid)
    assert up.stop(signal.SIGINT) == 0  # Ctrl-C
    assert_nothing_left(family)
    assert port_is_free(int(env["OKAY_PORT"]))


SLEEPY_APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def readyz(request):
    return JSONResponse({"status": "not_ready", "checks": {}}, status_code=503)


app = Starlette(routes=[Route("/readyz", readyz)])
"""


def test_crashing_and_never_ready_services_are_reported_not_waited_on(
    tmp_path: Path, launch: Callable[..., Up]
) -> None:
    root = tmp_path / "repo"
    (root / "pyproject.toml").parent.mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    broken = copy_template(root, "broken")
    (broken / "app" / "main.py").write_text("raise RuntimeError('broken on purpose')\n")
    sleepy = copy_template(root, "sleepy")
    (sleepy / "app" / "main.py").write_text(SLEEPY_APP)
    env = stack_env(tmp_path, BROKEN_PORT=free_port(), SLEEPY_PORT=free_port())

    # Long enough for the broken one to crash first even on a busy machine.
    up = launch(root, "--only", "broken,sleepy", "--ready-timeout", "3", env=env)
    up.wait_for("Ctrl-C stops everything.")

    assert "nexus  | broken: exited with code 1 before it was ready (its log is above)" in up.lines
    assert any("RuntimeError: broken on purpose" in line for line in up.lines)
    assert any(line.startswith("nexus  | sleepy: not ready after 3 s") for line in up.lines)
    assert up.row("broken")[2] == "exited (code 1)"
    assert up.row("sleepy")[2] == "not ready"

    family = descendants(up.proc.pid)
    assert up.stop(signal.SIGTERM) == 0
    assert_nothing_left(family)


def test_etcd_port_held_by_something_else_stops_with_one_line(
    tmp_path: Path, launch: Callable[..., Up]
) -> None:
    env = stack_env(tmp_path, TEMPLATE_PORT=free_port())
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(env["NEXUS_ETCD_PORT"])))
        holder.listen()
        up = launch(REPO, "--only", "template", env=env)
        assert up.proc.wait(timeout=60) == 1
    up.wait_for("not by etcd")
    assert f"etcd: port {env['NEXUS_ETCD_PORT']} is already in use on 127.0.0.1" in up.output
    assert port_is_free(int(env["TEMPLATE_PORT"]))  # nothing was started


def test_an_etcd_already_running_is_used_and_left_running(
    tmp_path: Path, launch: Callable[..., Up]
) -> None:
    etcd = EtcdServer(str(tmp_path / "etcd")).start()
    try:
        env = stack_env(tmp_path, TEMPLATE_PORT=free_port())
        env["NEXUS_ETCD_PORT"] = str(etcd.client_port)
        up = launch(REPO, "--only", "template", env=env)
        up.wait_for("Ctrl-C stops everything.")
        assert f"etcd: using the etcd already at {etcd.endpoint} (left running)" in up.output
        assert up.row("etcd")[2] == "ready (already running)"
        assert etcd.get_prefix("/nexus/services/template/")
        assert up.stop(signal.SIGTERM) == 0
        assert etcd.proc is not None
        assert etcd.proc.poll() is None  # not ours to stop
        assert etcd.get_prefix("/nexus/services/template/") == {}  # deregistered on the way out
    finally:
        etcd.cleanup()


def test_children_go_even_when_nexus_up_is_killed(
    tmp_path: Path, launch: Callable[..., Up]
) -> None:
    """SIGKILL leaves no time to clean up: the kernel's parent-death signal stops the rest."""
    env = stack_env(tmp_path, TEMPLATE_PORT=free_port())
    up = launch(REPO, "--only", "template", env=env)
    up.wait_for("Ctrl-C stops everything.")
    family = descendants(up.proc.pid)
    assert len(family) >= 2  # etcd and the service
    assert up.stop(signal.SIGKILL) == -signal.SIGKILL
    wait_until_gone(family)


def test_whole_stack_comes_up_routes_with_the_dev_key_and_stops_clean(
    tmp_path: Path, launch: Callable[..., Up]
) -> None:
    """``make up`` as a newcomer runs it: every service of the repo, then Ctrl-C (SIGTERM)."""
    names = sorted(p.parent.parent.name for p in (REPO / "services").glob("*/app/main.py"))
    ports = {f"{name.upper()}_PORT": free_port() for name in names}
    env = stack_env(tmp_path, **ports, GATEWAY_METRICS_PORT=free_port())
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        JWT_SIGNING_KEY_FILE=str(tmp_path / "jwt.pem"),
        OLLAMA_BASE_URL="off",
    )
    up = launch(REPO, env=env)
    up.wait_for("Ctrl-C stops everything.", timeout_s=120)
    for name in names:
        assert up.row(name)[2] == "ready", up.output
    key = (tmp_path / "state" / "dev-admin-key").read_text().strip()
    gateway = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
    echo = f"{gateway}/services/template/v1/echo"
    assert httpx.post(echo, json={"message": "x"}, timeout=10).status_code == 401
    deadline = time.monotonic() + 20
    while True:  # the gateway may still be fetching the template's metadata
        resp = httpx.post(echo, json={"message": "hi"}, timeout=10,
                          headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        if resp.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert resp.json() == {"message": "hi", "service": "template"}
    if "console" in names:  # the console is served through the gateway, at the printed URL
        assert f"Console          {gateway}/console" in up.output
        wait_until(
            lambda: httpx.get(f"{gateway}/console", timeout=10).status_code == 200, 20, "console"
        )

    family = descendants(up.proc.pid)
    assert up.stop(signal.SIGTERM) == 0
    wait_until_gone(family)
    for name, port in {**ports, "etcd": int(env["NEXUS_ETCD_PORT"])}.items():
        assert port_is_free(port), name
