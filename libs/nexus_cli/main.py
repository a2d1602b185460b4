"""``nexus``: the developer command of a Nexus checkout.

``nexus up [--only a,b] [--root DIR] [--ready-timeout S]`` runs the local stack;
``nexus new-service NAME [--port N] [--root DIR]`` copies ``services/template``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .newservice import NewServiceError, create_service
from .output import Output
from .stack import UpOptions, up


def is_root(path: Path) -> bool:
    return (path / "services").is_dir() and (path / "pyproject.toml").is_file()


def find_root(start: Path) -> Path | None:
    """The checkout holding ``start`` (any folder inside it works), else the one we run from."""
    for candidate in (start, *start.parents):
        if is_root(candidate):
            return candidate
    installed = Path(__file__).resolve().parents[2]  # libs/nexus_cli/main.py → the repo
    return installed if is_root(installed) else None


def _root(arg: str | None) -> Path:
    if arg is not None:
        root = Path(arg).resolve()
        if not is_root(root):
            raise SystemExit(
                f"nexus: {root} is not a Nexus checkout (no services/ or pyproject.toml)"
            )
        return root
    found = find_root(Path.cwd().resolve())
    if found is None:
        raise SystemExit("nexus: run me inside a Nexus checkout, or pass --root DIR")
    return found


def _names(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of service names")
    return names


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nexus", description="Run and grow a Nexus checkout.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    start = commands.add_parser(
        "up",
        help="run etcd and every service locally, with their logs, until Ctrl-C",
        description="Start etcd, then every services/<name> with app/main.py, each on its port"
        " (<NAME>_PORT, else SERVICE_PORT in its .env/.env.example); print a table and the"
        " dev API key; stream the logs; stop everything on Ctrl-C or SIGTERM. Environment:"
        " NEXUS_ETCD_PORT, NEXUS_ETCD_PEER_PORT, NEXUS_STATE_DIR (default <root>/.nexus),"
        " NEXUS_ADMIN_API_KEY, NEXUS_INTERNAL_TOKEN, NO_COLOR.",
    )
    start.add_argument("--only", type=_names, metavar="A,B", help="start only these services")
    start.add_argument("--root", metavar="DIR", help="the checkout (default: found from here)")
    start.add_argument(
        "--ready-timeout", type=_seconds, default=60.0, metavar="S",
        help="how long to wait for each service's /readyz before calling it not ready (60)",
    )  # fmt: skip

    new = commands.add_parser(
        "new-service",
        help="copy services/template to services/NAME with its own name and port",
    )
    new.add_argument("name", metavar="NAME", help="lowercase letters, digits and '-'")
    new.add_argument("--port", type=int, help="its SERVICE_PORT (default: the next free one)")
    new.add_argument("--root", metavar="DIR", help="the checkout (default: found from here)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = _root(args.root)
    if args.command == "up":
        options = UpOptions(root=root, only=args.only, ready_timeout_s=args.ready_timeout)
        return up(options, Output(), os.environ)
    try:
        created = create_service(root, args.name, args.port)
    except NewServiceError as exc:
        print(f"nexus new-service: {exc}", file=sys.stderr)
        return 2
    print(created.summary())
    return 0
