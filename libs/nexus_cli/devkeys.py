"""Secrets of the local stack: the dev admin API key and the gateway↔auth internal token.

Each is generated once into the git-ignored state folder (``.nexus/`` at the repo root) and
reused, so a key a developer pasted into a client keeps working across ``nexus up`` runs.

An admin key already in the environment (``NEXUS_ADMIN_API_KEY``) wins. It is never printed
(it is the operator's secret, and logs and terminals get shared), but it is written to
``.nexus/dev-admin-key`` (owner-only) all the same, so ``$(cat .nexus/dev-admin-key)`` is the
working key whichever way it was set. ``dev-admin-key.origin`` says which: a key that came
from the environment is never reused as if generated once the variable is gone (it would be
printed then); a fresh one is generated instead. The internal token from the environment is
not written.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ADMIN_KEY_FILE = "dev-admin-key"
ADMIN_KEY_ORIGIN_FILE = "dev-admin-key.origin"  # "generated" or "environment"
INTERNAL_TOKEN_FILE = "internal-token"


@dataclass(frozen=True)
class DevSecrets:
    admin_key: str
    admin_key_source: str  # shown next to the key, so people know where to change it
    internal_token: str
    admin_key_generated: bool = True  # False: the operator's own key, never to be printed


def write_private(path: Path, value: str) -> None:
    """``value`` into ``path``, readable by the owner only (mode 0600 even if it existed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")


def stored_secret(path: Path, make: str) -> str:
    """The value in ``path``; ``make`` is written there (owner-only) first if there is none."""
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    write_private(path, make)
    return make


def _admin_key(state_dir: Path, environ: Mapping[str, str]) -> tuple[str, str, bool]:
    path, origin = state_dir / ADMIN_KEY_FILE, state_dir / ADMIN_KEY_ORIGIN_FILE
    if given := environ.get("NEXUS_ADMIN_API_KEY", "").strip():
        write_private(path, given)
        write_private(origin, "environment")
        return given, f"NEXUS_ADMIN_API_KEY from the environment; also in {path}", False
    try:
        from_environment = origin.read_text(encoding="utf-8").strip() == "environment"
    except FileNotFoundError:
        from_environment = False
    if from_environment:
        path.unlink(missing_ok=True)  # the operator's key: not ours to reuse and print
    # ``nx-`` like every key the auth service issues, so it reads as an API key everywhere.
    key = stored_secret(path, "nx-" + secrets.token_hex(24))
    write_private(origin, "generated")
    return key, str(path), True


def load_dev_secrets(state_dir: Path, environ: Mapping[str, str]) -> DevSecrets:
    admin, source, generated = _admin_key(state_dir, environ)
    token = environ.get("NEXUS_INTERNAL_TOKEN") or stored_secret(
        state_dir / INTERNAL_TOKEN_FILE, secrets.token_urlsafe(32)
    )
    return DevSecrets(admin, source, token, admin_key_generated=generated)
