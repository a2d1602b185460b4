"""Secrets of the local stack: the dev admin API key and the gateway↔auth internal token.

Each is generated once into the git-ignored state folder (``.nexus/`` at the repo root) and
reused, so a key a developer pasted into a client keeps working across ``nexus up`` runs.
A value already in the environment wins and is never written to disk.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ADMIN_KEY_FILE = "dev-admin-key"
INTERNAL_TOKEN_FILE = "internal-token"


@dataclass(frozen=True)
class DevSecrets:
    admin_key: str
    admin_key_source: str  # shown next to the key, so people know where to change it
    internal_token: str


def stored_secret(path: Path, make: str) -> str:
    """The value in ``path``; ``make`` is written there (owner-only) first if there is none."""
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(make + "\n")
    return make


def load_dev_secrets(state_dir: Path, environ: Mapping[str, str]) -> DevSecrets:
    if environ.get("NEXUS_ADMIN_API_KEY"):
        admin, source = environ["NEXUS_ADMIN_API_KEY"], "NEXUS_ADMIN_API_KEY from the environment"
    else:
        path = state_dir / ADMIN_KEY_FILE
        # ``nx-`` like every key the auth service issues, so it reads as an API key everywhere.
        admin, source = stored_secret(path, "nx-" + secrets.token_hex(24)), str(path)
    token = environ.get("NEXUS_INTERNAL_TOKEN") or stored_secret(
        state_dir / INTERNAL_TOKEN_FILE, secrets.token_urlsafe(32)
    )
    return DevSecrets(admin, source, token)
