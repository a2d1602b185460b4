"""Small helpers around aetcd shared by registration (every service) and discovery (gateway)."""

from __future__ import annotations

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
