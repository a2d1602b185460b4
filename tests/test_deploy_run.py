"""Each image's CMD, run outside Docker, starts its service and its HEALTHCHECK passes.

Run from the service's directory (the image's WORKDIR holds that directory) with the env the
image and docker-compose.yml give it: the Dockerfile's ENV, then the compose service's
``environment`` (interpolated from .env.example). Container specifics are rewritten for this
machine: compose host names become 127.0.0.1 (``etcd`` is a real etcd on a free port, the
service itself its free port, any other a free port nobody listens on), fixed ports become
free ones and container paths (volumes, /data, the service user's home) temp directories.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deploy_support import (
    environment_of,
    parse_dockerfile,
    root_model,
    runnable_services,
    settings_variables,
)

from nexus_testing import EtcdServer, ServiceProcess, free_port
from nexus_testing.postgres import POSTGRES_URL, execute, unique_name

pytestmark = pytest.mark.integration

CONTAINER_PATHS = ("/data", "/home/nexus")
_URL = re.compile(r"(https?://)([A-Za-z0-9_.-]+):(\d+)")
# A PostgreSQL URL naming a compose host (the usage service's `usage-db`).
_PG_URL = re.compile(r"^postgresql(\+\w+)?://[^@/]*@([A-Za-z0-9_.-]+)(:\d+)?/\w+$")


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def scratch_database() -> Iterator[str]:
    """A throwaway database on this machine's PostgreSQL, as a URL; dropped afterwards."""
    name = unique_name("nexus_deployrun")
    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def compose_services() -> dict[str, Any]:
    found: dict[str, Any] = root_model()["services"]
    return found


def startable() -> list[Path]:
    return [d for d in runnable_services() if (d / "Dockerfile").exists()]


def localize(
    env: dict[str, str], *, name: str, port: int, etcd_url: str, known_hosts: set[str],
    container_paths: list[str], scratch: Path, exposed: dict[int, int], database_url: str = "",
) -> dict[str, str]:  # fmt: skip
    """Container env → this machine's: hosts, ports and paths as the docstring says.

    ``exposed`` maps each port the image EXPOSEs to a free one here (a variable holding just
    such a port, like the gateway's metrics port, gets the free one). A PostgreSQL URL naming a
    compose host becomes ``database_url`` (a scratch database on this machine's PostgreSQL).
    """
    elsewhere: dict[str, int] = {}

    def host(match: re.Match[str]) -> str:
        scheme, hostname = match.group(1), match.group(2)
        if hostname == "etcd":
            return etcd_url
        if hostname == name:
            return f"{scheme}127.0.0.1:{port}"
        if hostname in known_hosts:
            return f"{scheme}127.0.0.1:{elsewhere.setdefault(hostname, free_port())}"
        return match.group(0)

    out: dict[str, str] = {}
    for key, value in env.items():
        pg = _PG_URL.match(value)
        if pg and pg.group(2) in known_hosts and database_url:
            out[key] = database_url
            continue
        if value.isdigit() and int(value) in exposed:
            out[key] = str(exposed[int(value)])
            continue
        value = _URL.sub(host, value)
        if "://" not in value or value.startswith("sqlite"):
            for prefix in container_paths:
                if re.search(rf"(^|/){re.escape(prefix.lstrip('/'))}(/|$)", value):
                    local = scratch / prefix.strip("/")
                    local.mkdir(parents=True, exist_ok=True)
                    value = value.replace(prefix, str(local), 1)
                    break
        out[key] = value
    return out


def command_here(cmd: list[str], port: int) -> list[str]:
    """The image's CMD for this machine: the venv's uvicorn (or Python, for the gateway's
    ``python -m app.workers``), loopback, a free port."""
    assert cmd[0] in ("uvicorn", "python"), cmd
    head = [sys.executable, "-m", "uvicorn"] if cmd[0] == "uvicorn" else [sys.executable]
    args = [*head, *cmd[1:]]
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    return args


@pytest.mark.parametrize("service_dir", startable(), ids=lambda p: p.name)
def test_image_command_starts_the_service_and_its_healthcheck_passes(
    service_dir: Path, etcd: EtcdServer, compose_services: dict[str, Any], tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    name = service_dir.name
    dockerfile = parse_dockerfile(service_dir / "Dockerfile")
    service = compose_services[name]
    cmd = dockerfile.cmd
    container_port = int(cmd[cmd.index("--port") + 1])
    port = free_port()

    volumes = [v.split(":")[1] for v in service.get("volumes") or [] if isinstance(v, str)]
    environment = environment_of(service)
    needs_db = any(_PG_URL.match(v) for v in environment.values())
    database_url = request.getfixturevalue("scratch_database") if needs_db else ""
    env = localize(
        {**dockerfile.env, **environment},
        name=name, port=port, etcd_url=etcd.endpoint, known_hosts=set(compose_services),
        container_paths=sorted({*volumes, *CONTAINER_PATHS}, key=len, reverse=True),
        scratch=tmp_path, database_url=database_url,
        exposed={p: port if p == container_port else free_port() for p in dockerfile.exposed},
    )  # fmt: skip
    assert env["ETCD_ENDPOINTS"] == etcd.endpoint
    # The container's env has nothing else: blank what this machine's env would add.
    for variable in settings_variables(service_dir) - env.keys():
        if os.environ.get(variable):
            env[variable] = ""
    for variable in os.environ:
        if variable.endswith("_BASE_URL") and variable not in env:
            env[variable] = ""

    proc = ServiceProcess(service_dir, env=env, port=port, args=command_here(cmd, port))
    try:
        proc.start(wait="/health", timeout_s=90)

        probe = dockerfile.healthcheck
        code = probe[2].replace(f"127.0.0.1:{container_port}/", f"127.0.0.1:{port}/")
        assert code != probe[2], "the HEALTHCHECK does not probe the CMD's port"
        result = subprocess.run(
            [sys.executable, *probe[1:2], code, *probe[3:]],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"HEALTHCHECK failed: {result.stderr}\n{proc.output()}"

        # The compose wiring is what makes it routable: registered under its advertised URL.
        registered = wait_for_registration(etcd, env["SERVICE_NAME"])
        assert registered["base_url"] == env["SERVICE_ADVERTISE_URL"].rstrip("/")
    finally:
        proc.stop()


def wait_for_registration(etcd: EtcdServer, name: str, timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        values = etcd.get_prefix(f"/nexus/services/{name}/")
        if values:
            return json.loads(next(iter(values.values())))
        time.sleep(0.1)
    raise AssertionError(f"{name} did not register in etcd within {timeout_s}s")
