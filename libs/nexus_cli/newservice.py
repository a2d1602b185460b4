"""``nexus new-service NAME``: ``services/template`` copied to ``services/NAME``, renamed.

The copy is what ``cp -r`` gives (minus caches, virtualenvs and the template's own ``.env``);
then only values change: ``SERVICE_NAME`` and ``SERVICE_PORT`` in ``.env.example`` and a new
``.env``; the defaults in ``app/settings.py`` (so a fresh clone, where the git-ignored ``.env``
is missing, still runs under the new name); the project name in ``pyproject.toml``; the
paths, tag and port in the ``Dockerfile``; and a README of its own. The code itself names no
service, which is why a plain ``cp -r`` plus those two variables runs just as well.

For Docker it also writes ``docker-compose.NAME.yml`` from ``docker-compose.template.yml`` with
every ``template`` and the template's port replaced (its own image name, Dockerfile, advertised
URL, host-port variable and healthcheck port: a copy that kept ``nexus/template`` would replace
the template's image when built) and adds it to ``docker-compose.yml``'s ``include`` list; the
manual recipe in services/README.md makes the same edits with ``sed``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .services import DESIGN_PORTS, env_file_values, port_variable, service_dirs

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")  # also fits SERVICE_NAME's rule
MAX_NAME = 63
RESERVED = {"etcd", "nexus"}  # the other prefixes ``nexus up`` prints its lines under
# DESIGN.md's port table (etcd, its peers, gateway metrics, Ollama too): never handed out.
KNOWN_PORTS = {*DESIGN_PORTS.values(), 2379, 2380, 8801, 11434}
FIRST_PORT = 9001
SKIP = shutil.ignore_patterns(
    "__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".venv", ".env", "*.db"
)


class NewServiceError(Exception):
    """Refused: the message says why, in one line."""


@dataclass(frozen=True)
class NewService:
    name: str
    directory: Path
    port: int

    compose_file: Path | None = None

    def summary(self) -> str:
        text = (
            f"Created services/{self.name} (SERVICE_NAME={self.name}, SERVICE_PORT={self.port}).\n"
            f"Run it with the stack: make up (or nexus up --only {self.name}),\n"
            f"or alone: cd services/{self.name} && ../../.venv/bin/python -m uvicorn app.main:app"
            f" --port {self.port}"
        )
        if self.compose_file is not None:
            text += (
                f"\nDocker: {self.compose_file.name} (included by docker-compose.yml);"
                f" docker compose up --build {self.name}"
            )
        return text


def check_name(name: str, services: Path) -> None:
    if not NAME_PATTERN.match(name) or len(name) > MAX_NAME:
        raise NewServiceError(
            f"{name!r} is not a valid service name: use lowercase letters, digits and single"
            f" '-' between them, starting with a letter, at most {MAX_NAME} characters"
        )
    if name in RESERVED:
        raise NewServiceError(f"{name!r} is reserved by nexus up; pick another name")
    if (services / name).exists():
        raise NewServiceError(f"services/{name} already exists; pick another name")


def ports_in_use(services: Path) -> dict[int, str]:
    """Each port a service already declares (in its .env or .env.example), with its owner."""
    taken: dict[int, str] = {}
    for directory in service_dirs(services.parent):
        value = env_file_values(directory).get("SERVICE_PORT", "")
        if value.isdigit():
            taken.setdefault(int(value), directory.name)
    return taken


def choose_port(services: Path, wanted: int | None) -> int:
    taken = ports_in_use(services)
    if wanted is None:
        return next(p for p in range(FIRST_PORT, 65536) if p not in taken and p not in KNOWN_PORTS)
    if not 1024 <= wanted <= 65535:
        raise NewServiceError(f"--port {wanted}: pick a port from 1024 to 65535")
    if wanted in taken:
        raise NewServiceError(f"--port {wanted} is already services/{taken[wanted]}'s port")
    if wanted in KNOWN_PORTS:
        raise NewServiceError(f"--port {wanted} is reserved for a Nexus component (DESIGN.md)")
    return wanted


def _keep_key(value: str) -> Callable[[re.Match[str]], str]:
    # A function, not a replacement string: a value may hold backslashes or group references.
    return lambda match: match.group(1) + value


def set_env_values(text: str, values: dict[str, str]) -> str:
    """``text`` (a .env file) with each ``KEY=...`` line set; missing keys appended."""
    for key, value in values.items():
        line = re.compile(rf"^(\s*(?:export\s+)?{re.escape(key)}\s*=).*$", re.MULTILINE)
        text, found = line.subn(_keep_key(value), text, count=1)
        if not found:
            text = text.rstrip("\n") + f"\n{key}={value}\n"
    return text


def _rewrite(path: Path, pattern: str, replacement: str) -> None:
    """Replace the first match in ``path`` if the file and the pattern are there."""
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        path.write_text(re.sub(pattern, replacement, text, count=1, flags=re.M), encoding="utf-8")


def _rewrite_dockerfile(path: Path, name: str, old_port: str, port: int) -> None:
    """Its build context paths, image tag and port: it is built from the repo root."""
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"\bservices/template\b", f"services/{name}", text)
    text = re.sub(r"\bnexus/template\b", f"nexus/{name}", text)
    text = re.sub(rf"\b{re.escape(old_port)}\b", str(port), text)
    path.write_text(text, encoding="utf-8")


def compose_text(template: str, name: str, old_port: str, port: int) -> str:
    """``docker-compose.template.yml`` for ``name``: every ``template`` and its port replaced."""
    text = re.sub(r"\btemplate\b", name, template)
    text = re.sub(r"\bTEMPLATE_", f"{name.upper().replace('-', '_')}_", text)
    return re.sub(rf"\b{re.escape(old_port)}\b", str(port), text)


def _write_compose(root: Path, name: str, old_port: str, port: int) -> Path | None:
    """``docker-compose.NAME.yml`` beside the template's, included by ``docker-compose.yml``."""
    template = root / "docker-compose.template.yml"
    if not template.is_file():
        return None
    target = root / f"docker-compose.{name}.yml"
    if target.exists():
        raise NewServiceError(f"{target.name} already exists; pick another name")
    target.write_text(compose_text(template.read_text(encoding="utf-8"), name, old_port, port))
    main = root / "docker-compose.yml"
    if main.is_file():
        text = main.read_text(encoding="utf-8")
        entries = list(re.finditer(r"^(\s*)- docker-compose\.[\w.-]+\.yml[ \t]*$", text, re.M))
        if entries and f"- {target.name}" not in text:
            last = entries[-1]
            line = f"\n{last.group(1)}- {target.name}"
            main.write_text(text[: last.end()] + line + text[last.end() :], encoding="utf-8")
    return target


def readme(name: str, port: int) -> str:
    return f"""# {name}

A Nexus service, created from `services/template` with `nexus new-service {name}`.

- Name `{name}` (`SERVICE_NAME`) and port `{port}` (`SERVICE_PORT`), set in `.env.example` and
  `.env`; `{port_variable(name)}` moves it for one `nexus up` run.
- With the whole stack: `make up` (or `.venv/bin/nexus up --only {name}` from the repo root).
  The gateway finds it in etcd and routes what it advertises, e.g.
  `POST http://127.0.0.1:8800/services/{name}/v1/echo`.
- Alone, from this directory: `../../.venv/bin/python -m uvicorn app.main:app --port {port}`
  (or `../../.venv/bin/python -m app.main`).
- Tests: `../../.venv/bin/python -m pytest tests -q`.
- Docker: `docker-compose.{name}.yml` at the repo root (image `nexus/{name}`, port {port} in it
  and in this Dockerfile; included by `docker-compose.yml`): `docker compose up --build {name}`.

Replace the example endpoint in `app/routes.py` with your own; `services/template/README.md`
explains the contract every service meets.
"""


def create_service(root: Path, name: str, port: int | None = None) -> NewService:
    services = root / "services"
    template = services / "template"
    if not (template / "app" / "main.py").is_file():
        raise NewServiceError(f"{template} is missing or has no app/main.py")
    check_name(name, services)
    port = choose_port(services, port)
    old_port = env_file_values(template).get("SERVICE_PORT", "9000")
    target = services / name
    shutil.copytree(template, target, ignore=SKIP)
    try:
        example = target / ".env.example"
        values = {"SERVICE_NAME": name, "SERVICE_PORT": str(port)}
        text = example.read_text(encoding="utf-8") if example.is_file() else ""
        text = re.sub(r"\A# Template service", f"# {name} service", text)
        example.write_text(set_env_values(text, values), encoding="utf-8")
        shutil.copyfile(example, target / ".env")
        settings = target / "app" / "settings.py"
        _rewrite(settings, r'^(\s*service_name\s*:\s*str\s*=\s*)"[^"]*"', rf'\g<1>"{name}"')
        _rewrite(settings, r"^(\s*service_port\s*:\s*int\s*=\s*)\d+", rf"\g<1>{port}")
        _rewrite(target / "pyproject.toml", r'^name\s*=\s*"[^"]*"', f'name = "nexus-{name}"')
        _rewrite_dockerfile(target / "Dockerfile", name, old_port, port)
        (target / "README.md").write_text(readme(name, port), encoding="utf-8")
        compose = _write_compose(root, name, old_port, port)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # no half-made service left to trip over
        raise
    return NewService(name, target, port, compose)
