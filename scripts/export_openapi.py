"""Export each service's OpenAPI document to ``docs/api/<service>.json``.

Every service's code is a package named ``app``, so each document comes from its own
subprocess that imports ``app.main.build_app`` and dumps ``build_app().openapi()``. The app is
built with its defaults: the subprocess gets a minimal environment and runs from a scratch
directory with the service on ``PYTHONPATH`` (so neither a developer's env vars nor a ``.env``
in the service directory changes the published document).

    .venv/bin/python scripts/export_openapi.py            # (re)write docs/api/*.json
    .venv/bin/python scripts/export_openapi.py --check    # exit 1 if any is stale
    .venv/bin/python scripts/export_openapi.py images tts # only these services
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "services"
API_DOCS = ROOT / "docs" / "api"

_DUMP = (
    "import json, sys\n"
    "from app.main import build_app\n"
    "json.dump(build_app().openapi(), sys.stdout)\n"
)
# Passed through because the interpreter or numeric libraries need them, not the app.
_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
_KEEP_PREFIXES = ("OPENBLAS_",)


def services() -> list[Path]:
    """Service directories with an app to export (``app/main.py``)."""
    return sorted(p.parent.parent for p in SERVICES.glob("*/app/main.py"))


def _environment(service_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _KEEP or k.startswith(_KEEP_PREFIXES)}
    env["PYTHONPATH"] = str(service_dir)
    env["PYTHONHASHSEED"] = "0"
    return env


def openapi_of(service_dir: Path) -> dict[str, object]:
    """The service's OpenAPI document, built in a subprocess of its own."""
    with tempfile.TemporaryDirectory(prefix="nexus-openapi-") as scratch:
        proc = subprocess.run(
            [sys.executable, "-c", _DUMP],
            cwd=scratch,
            env=_environment(service_dir),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{service_dir.name}: building the app failed:\n{proc.stderr}")
    document: dict[str, object] = json.loads(proc.stdout)
    return document


def render(document: dict[str, object]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def target(service_dir: Path) -> Path:
    return API_DOCS / f"{service_dir.name}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="services to export (default: all)")
    parser.add_argument("--check", action="store_true", help="report stale files, write none")
    args = parser.parse_args(argv)

    chosen = [s for s in services() if not args.names or s.name in args.names]
    unknown = set(args.names) - {s.name for s in chosen}
    if unknown:
        parser.error(f"no such service with app/main.py: {', '.join(sorted(unknown))}")
    stale: list[str] = []
    API_DOCS.mkdir(parents=True, exist_ok=True)
    for service_dir in chosen:
        text = render(openapi_of(service_dir))
        path = target(service_dir)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(str(path.relative_to(ROOT)))
        if not args.check:
            path.write_text(text)
    verb = "stale" if args.check else "written"
    for name in stale:
        print(f"{verb}: {name}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
