"""The local stack's etcd: which binary, which ports, where its data lives, is it healthy.

Data stays under the state folder between runs like a real deployment's would; services
delete their keys on a clean stop, which is why etcd is stopped last (see ``stack``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

DEFAULT_CLIENT_PORT = 2379
DEFAULT_PEER_PORT = 2380


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    value = environ.get(name) or str(default)
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError(f"{name}={value!r} is not a port number (1-65535)")
    return int(value)


@dataclass(frozen=True)
class EtcdConfig:
    client_port: int
    peer_port: int
    data_dir: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str], state_dir: Path) -> EtcdConfig:
        return cls(
            client_port=_port(environ, "NEXUS_ETCD_PORT", DEFAULT_CLIENT_PORT),
            peer_port=_port(environ, "NEXUS_ETCD_PEER_PORT", DEFAULT_PEER_PORT),
            data_dir=state_dir / "etcd",
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def argv(self, binary: str) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            binary,
            "--name", "nexus-dev",
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"nexus-dev={peer}",
            "--log-level", "error",  # warn/info: start-up and shutdown chatter, not news
        ]  # fmt: skip


async def is_healthy(client: httpx.AsyncClient, endpoint: str) -> bool:
    """True when an etcd answers at ``endpoint`` and says it is healthy."""
    try:
        resp = await client.get(f"{endpoint}/health", timeout=1.0)
        return resp.status_code == 200 and resp.json().get("health") == "true"
    except (httpx.HTTPError, ValueError, AttributeError):
        return False
