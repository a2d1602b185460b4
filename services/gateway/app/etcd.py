"""etcd access for discovery: a small ``EtcdSource`` protocol and its aetcd implementation.

Discovery only needs a prefix read (with the revision it reflects), the current revision, and
a watch from a given revision that says when that revision was compacted away. Keeping that
behind a protocol lets the tests drive every failure (outage, compaction, a reset store)
with a fake, while the integration tests run the aetcd one against a real etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aetcd
from aetcd.exceptions import RevisionCompactedError
from opentelemetry.trace import SpanKind

from nexus_kit.etcd import parse_endpoint
from nexus_kit.tracing import span


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    lease: int = 0
    create_revision: int = 0
    mod_revision: int = 0


@dataclass(frozen=True, slots=True)
class Change:
    kind: Literal["put", "delete"]
    kv: KeyValue


class Compacted(Exception):
    """The watch's start revision is gone from etcd's history: re-read everything."""


class EtcdSource(Protocol):
    async def read(self, prefix: str) -> tuple[int, list[KeyValue]]: ...
    async def current_revision(self, prefix: str) -> int: ...
    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Change]: ...
    async def close(self) -> None: ...


# gRPC keepalive so a silently dead etcd (no RST, e.g. a host gone) still ends the watch.
_GRPC_OPTIONS = {
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.http2.max_pings_without_data": 0,
}


class AetcdSource:
    """``EtcdSource`` over one aetcd client (asyncio gRPC) for one endpoint."""

    def __init__(self, endpoint: str, timeout_s: float = 3.0) -> None:
        host, port = parse_endpoint(endpoint)
        self._client = aetcd.Client(
            host=host, port=port, timeout=timeout_s, connect_wait_timeout=2, options=_GRPC_OPTIONS
        )

    async def read(self, prefix: str) -> tuple[int, list[KeyValue]]:
        attributes = {"db.system.name": "etcd", "db.operation.name": "range",
                      "nexus.etcd.prefix": prefix}  # fmt: skip
        with span("etcd.get_prefix", kind=SpanKind.CLIENT, attributes=attributes) as current:
            result = await self._client.get_prefix(prefix.encode())
            found = [_key_value(kv) for kv in result]
            current.set_attribute("nexus.etcd.keys", len(found))
            current.set_attribute("nexus.etcd.revision", result.header.revision)
        return result.header.revision, found

    async def current_revision(self, prefix: str) -> int:
        result = await self._client.get_prefix(prefix.encode(), keys_only=True)
        revision: int = result.header.revision
        return revision

    async def watch(self, prefix: str, start_revision: int) -> AsyncGenerator[Change, None]:
        try:
            watch = await self._client.watch_prefix(prefix.encode(), start_revision=start_revision)
        except RevisionCompactedError as exc:
            raise Compacted(str(exc)) from exc
        try:
            async for event in watch:
                kind: Literal["put", "delete"] = "put" if event.kind == "PUT" else "delete"
                yield Change(kind, _key_value(event.kv))
        except RevisionCompactedError as exc:
            raise Compacted(str(exc)) from exc
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watch.cancel(), 1.0)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.close()


def _key_value(kv: Any) -> KeyValue:
    return KeyValue(
        key=kv.key.decode("utf-8", "replace"),
        value=kv.value,
        lease=kv.lease,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
    )
