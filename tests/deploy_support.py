"""What the deploy tests share: compose loading as Docker Compose does it, Dockerfile parsing.

No Docker engine runs here, so the compose model is built in Python the way Compose builds
it: each file interpolated (``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``... from an env
file), top-level ``include`` loaded file by file, their resources imported into one model
(the same resource defined twice must be identical, as in compose-go's ``importResources``).
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "services"
VENV_BIN = Path(sys.executable).parent

# Components the root compose file runs; the Nexus services are those with a Dockerfile.
ROOT_COMPOSE = ROOT / "docker-compose.yml"
COMPONENT_FILES = sorted(ROOT.glob("docker-compose.*.yml"))
RESOURCE_KEYS = ("services", "volumes", "networks", "secrets", "configs")
GPU_COMPONENTS = ("ollama", "images", "tts")


def service_dirs() -> list[Path]:
    """Service directories that are built into an image (have a Dockerfile)."""
    return sorted(p.parent for p in SERVICES.glob("*/Dockerfile"))


def runnable_services() -> list[Path]:
    """Service directories with code (``app/main.py``): those that can be started."""
    return sorted(p.parent.parent for p in SERVICES.glob("*/app/main.py"))


# --- env files and interpolation --------------------------------------------------------------

_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_COMMENTED_ASSIGNMENT = re.compile(r"^\s*#\s*([A-Z][A-Z0-9_]*)=")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REFERENCE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
_REQUIRED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?")


class InterpolationError(ValueError):
    pass


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a .env file (quotes stripped; comments and blanks skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = _ASSIGNMENT.match(line)
        if match is None or line.lstrip().startswith("#"):
            continue
        value = match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[match.group(1)] = value
    return values


def documented_keys(path: Path) -> set[str]:
    """Variables a .env.example documents: set (``KEY=``) or shown commented (``# KEY=``)."""
    keys = set(read_env_file(path))
    for line in path.read_text().splitlines():
        match = _COMMENTED_ASSIGNMENT.match(line)
        if match:
            keys.add(match.group(1))
    return keys


def referenced_variables(text: str) -> set[str]:
    """Every variable a compose file interpolates, defaults and nested ones included."""
    return set(_REFERENCE.findall(text.replace("$$", "")))


def required_variables(text: str) -> set[str]:
    return set(_REQUIRED.findall(text.replace("$$", "")))


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation: ``$$``, ``$VAR``, ``${VAR}`` and the ``-``/``?``/``+`` forms."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            end = _closing_brace(text, i + 2)
            out.append(_expand(text[i + 2 : end], env))
            i = end + 1
        elif (match := _NAME.match(text, i + 1)) is not None:
            out.append(env.get(match.group(), ""))
            i = match.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth, i = 1, start
    while i < len(text):
        if text.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise InterpolationError(f"unclosed '${{' in {text!r}")


def _expand(body: str, env: Mapping[str, str]) -> str:
    match = _NAME.match(body)
    if match is None:
        raise InterpolationError(f"invalid interpolation format for ${{{body}}}")
    name, rest = match.group(), body[match.end() :]
    value = env.get(name)
    if not rest:
        return value or ""
    for op in (":-", ":?", ":+", "-", "?", "+"):
        if not rest.startswith(op):
            continue
        arg = rest[len(op) :]
        missing = value is None or (op.startswith(":") and value == "")
        if op.endswith("-"):
            return interpolate(arg, env) if missing else str(value)
        if op.endswith("?"):
            if missing:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return str(value)
        return "" if missing else interpolate(arg, env)
    raise InterpolationError(f"invalid interpolation format for ${{{body}}}")


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def example_env(env_example: Path, compose_files: list[Path]) -> dict[str, str]:
    """The .env a user makes from ``env_example``, required secrets filled with test values.

    A value passes both secret formats: the admin key's ``nx-`` + 20..200 URL-safe characters
    and the internal token's 16+ printable characters.
    """
    env = read_env_file(env_example)
    for path in compose_files:
        for name in required_variables(path.read_text()):
            if not env.get(name):
                env[name] = "nx-" + secrets.token_urlsafe(24)
    return env


# --- compose model ----------------------------------------------------------------------------


def load_compose(path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """One compose file with its ``include``s, interpolated and merged as Compose does."""
    raw = yaml.safe_load(path.read_text()) or {}
    model = interpolate_tree(raw, env)
    includes = model.pop("include", None) or []
    merged: dict[str, Any] = {k: v for k, v in model.items() if not k.startswith("x-")}
    for item in includes:
        paths = item if isinstance(item, str) else item["path"]
        for relative in [paths] if isinstance(paths, str) else paths:
            imported = load_compose((path.parent / relative).resolve(), env)
            _import_resources(imported, merged, relative)
    return merged


def _import_resources(source: dict[str, Any], target: dict[str, Any], origin: str) -> None:
    for key in RESOURCE_KEYS:
        incoming = source.get(key) or {}
        if not incoming:
            continue
        into = target.get(key) or {}
        target[key] = into
        for name, value in incoming.items():
            if name in into and into[name] != value:
                raise ValueError(f"{key}.{name} from {origin} conflicts with imported resource")
            into[name] = value


def root_model() -> dict[str, Any]:
    files = [ROOT_COMPOSE, *COMPONENT_FILES]
    return load_compose(ROOT_COMPOSE, example_env(ROOT / ".env.example", files))


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """A compose service's ``environment`` (map or ``KEY=value`` list) as a dict."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {pair[0]: pair[1] if len(pair) > 1 else "" for pair in pairs}
    return {key: "" if value is None else str(value) for key, value in env.items()}


def host_ports(service: Mapping[str, Any]) -> list[tuple[str, int]]:
    """``(host ip, host port)`` of each published port (short and long syntax)."""
    found: list[tuple[str, int]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if entry.get("published"):
                found.append((str(entry.get("host_ip", "0.0.0.0")), int(entry["published"])))
            continue
        parts = str(entry).split("/")[0].rsplit(":", 2)
        if len(parts) == 3:
            found.append((parts[0] or "0.0.0.0", int(parts[1])))
        elif len(parts) == 2:
            found.append(("0.0.0.0", int(parts[0])))
    return found


def check_jsonschema(paths: list[Path], schema: str = "vendor.compose-spec") -> str:
    """Run check-jsonschema on ``paths``; '' when they validate, else its report."""
    proc = subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", schema, *map(str, paths)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return "" if proc.returncode == 0 else proc.stdout + proc.stderr


# --- Dockerfiles ------------------------------------------------------------------------------


@dataclass
class Dockerfile:
    path: Path
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for key, rest in self.instructions if key == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None

    @property
    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for rest in self.all("ENV"):
            tokens = shlex.split(rest)
            if tokens and "=" not in tokens[0]:  # legacy ``ENV KEY value``
                values[tokens[0]] = " ".join(tokens[1:])
                continue
            for token in tokens:
                key, _, value = token.partition("=")
                values[key] = value
        return values

    @property
    def cmd(self) -> list[str]:
        rest = self.last("CMD")
        assert rest is not None, f"{self.path}: no CMD"
        value = json.loads(rest)
        assert isinstance(value, list), f"{self.path}: CMD is not the exec (JSON) form"
        return [str(v) for v in value]

    @property
    def healthcheck(self) -> list[str]:
        """The HEALTHCHECK's command (exec form), options dropped."""
        rest = self.last("HEALTHCHECK")
        assert rest is not None, f"{self.path}: no HEALTHCHECK"
        _, sep, command = rest.partition("CMD ")
        assert sep, f"{self.path}: HEALTHCHECK without CMD"
        value = json.loads(command)
        assert isinstance(value, list), f"{self.path}: HEALTHCHECK CMD is not the exec form"
        return [str(v) for v in value]

    @property
    def exposed(self) -> list[int]:
        return [int(p.split("/")[0]) for rest in self.all("EXPOSE") for p in rest.split()]

    @property
    def base_image(self) -> str:
        """The first FROM, with ARG defaults declared before it substituted."""
        args: dict[str, str] = {}
        for key, rest in self.instructions:
            if key == "ARG":
                name, _, default = rest.partition("=")
                args[name.strip()] = default.strip().strip('"')
            elif key == "FROM":
                return interpolate(rest.split()[0], args)
        raise AssertionError(f"{self.path}: no FROM")


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions with continuation lines joined and comment lines dropped."""
    parsed = Dockerfile(path)
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, rest = full.partition(" ")
        parsed.instructions.append((keyword.upper(), rest.strip()))
    return parsed


# --- settings of a service ----------------------------------------------------------------------

_SETTINGS_PROBE = """
import inspect, json
from nexus_kit.settings import ServiceSettings
try:
    import app.settings as module
    classes = [c for c in vars(module).values() if inspect.isclass(c)
               and issubclass(c, ServiceSettings) and c.__module__ == module.__name__]
except ModuleNotFoundError:
    classes = []
classes = classes or [ServiceSettings]
names = set()
for cls in classes:
    prefix = cls.model_config.get("env_prefix") or ""
    for name, info in cls.model_fields.items():
        alias = info.validation_alias or info.alias
        choices = getattr(alias, "choices", None)
        if isinstance(alias, str):
            names.add(alias.upper())
        elif choices:
            names.update(c.upper() for c in choices if isinstance(c, str))
        else:
            names.add((prefix + name).upper())
print(json.dumps(sorted(names)))
"""


def settings_variables(service_dir: Path) -> set[str]:
    """Env variables the service's settings classes read (base fields included).

    Imported in a subprocess from the service's directory: every service's package is ``app``.
    """
    proc = subprocess.run(
        [sys.executable, "-c", _SETTINGS_PROBE],
        cwd=service_dir, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{service_dir.name}: settings probe failed:\n{proc.stderr}"
    return set(json.loads(proc.stdout))
