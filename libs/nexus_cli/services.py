"""Which services ``nexus up`` starts, under which name and on which port.

A service is a directory under ``services/`` with ``app/main.py``. Its port is the first of:
the environment variable ``<NAME>_PORT`` (so tests and a second stack can move it), then
``SERVICE_PORT`` in its ``.env``, then in its ``.env.example``, then DESIGN.md's port for a
known component. Its ``SERVICE_NAME`` comes
from the same files, else the directory name, so a plain ``cp -r`` copy is not mistaken for
the template. Problems are returned as one line each, never raised, because one bad service
must not keep the others from starting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values  # the parser pydantic-settings uses, so we read what services read

ENV_FILES = (".env", ".env.example")  # highest precedence first
# DESIGN.md's port table: the last resort for a known component whose env files lack a port.
DESIGN_PORTS = {
    "gateway": 8800,
    "auth": 8810,
    "images": 7860,
    "tts": 9940,
    "template": 9000,
    "usage": 8820,
    "console": 8830,
}


@dataclass(frozen=True)
class ServiceSpec:
    key: str  # the directory name: table row, log prefix, ``<KEY>_PORT``
    directory: Path
    service_name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class ServiceProblem(Exception):
    """A service that cannot be started; the message is the one line shown to the user."""


def port_variable(key: str) -> str:
    """``my-svc`` → ``MY_SVC_PORT``."""
    return re.sub(r"[^A-Za-z0-9]", "_", key).upper() + "_PORT"


def env_file_values(directory: Path) -> dict[str, str]:
    """The service's ``.env`` over its ``.env.example``; empty values count as unset."""
    merged: dict[str, str] = {}
    for name in reversed(ENV_FILES):
        path = directory / name
        if path.is_file():
            merged.update({k: v for k, v in dotenv_values(path).items() if v})
    return merged


def parse_port(value: str, source: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ServiceProblem(f"{source}={value!r} is not a port number (1-65535)")
    return port


def load_spec(directory: Path, environ: Mapping[str, str]) -> ServiceSpec:
    key = directory.name
    if not (directory / "app" / "main.py").is_file():
        raise ServiceProblem(f"{key}: services/{key}/app/main.py does not exist (yet); skipped")
    files = env_file_values(directory)
    variable = port_variable(key)
    if environ.get(variable):
        port = parse_port(environ[variable], f"{key}: {variable}")
    elif "SERVICE_PORT" in files:
        port = parse_port(files["SERVICE_PORT"], f"{key}: SERVICE_PORT in services/{key}/.env*")
    elif key in DESIGN_PORTS:
        port = DESIGN_PORTS[key]
    else:
        raise ServiceProblem(
            f"{key}: no SERVICE_PORT in services/{key}/.env or .env.example; set {variable}"
        )
    return ServiceSpec(key, directory, files.get("SERVICE_NAME", key), port)


def service_dirs(root: Path) -> list[Path]:
    """Every directory under ``services/`` that can run (has ``app/main.py``), sorted."""
    base = root / "services"
    return sorted(p.parent.parent for p in base.glob("*/app/main.py") if p.parent.parent.is_dir())


def select(
    root: Path, only: list[str] | None, environ: Mapping[str, str]
) -> tuple[list[ServiceSpec], list[str]]:
    """The services to start and one line per service left out (unknown, unready, clashing)."""
    problems: list[str] = []
    if only is None:
        dirs = service_dirs(root)
    else:
        dirs = []
        for key in dict.fromkeys(only):  # keep order, drop repeats
            if (
                Path(key).name == key
                and key not in (".", "..")
                and (root / "services" / key).is_dir()
            ):
                dirs.append(root / "services" / key)
            else:
                known = ", ".join(p.name for p in service_dirs(root)) or "none"
                problems.append(f"{key}: no such service under services/ (known: {known})")
    specs: list[ServiceSpec] = []
    for directory in dirs:
        try:
            spec = load_spec(directory, environ)
        except ServiceProblem as problem:
            problems.append(str(problem))
            continue
        clash = next((s for s in specs if s.port == spec.port), None)
        if clash is not None:
            problems.append(
                f"{spec.key}: port {spec.port} is also {clash.key}'s; not started"
                f" (set {port_variable(spec.key)} or SERVICE_PORT in services/{spec.key}/.env)"
            )
            continue
        specs.append(spec)
    return specs, problems
