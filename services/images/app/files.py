"""Generated files behind capability URLs: unguessable ids that expire.

``url`` results are written to a directory of this process (created at startup, removed at
shutdown) and indexed in memory: an id is 256 random bits, so knowing the URL is the
permission, and the gateway serves ``GET /v1/images/files/{id}`` without a bearer. Expired
entries are swept whenever a file is stored or asked for.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")  # token_urlsafe(32)


class FileStore:
    def __init__(
        self, parent_dir: str, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.parent_dir = parent_dir or None
        self.ttl_s = ttl_s
        self.clock = clock
        self._root: Path | None = None
        self._expires: dict[str, float] = {}

    async def open(self) -> None:
        path = await asyncio.to_thread(tempfile.mkdtemp, "", "nexus-images-", self.parent_dir)
        self._root = Path(path)

    async def close(self) -> None:
        if self._root is not None:
            await asyncio.to_thread(shutil.rmtree, self._root, True)
        self._root = None
        self._expires.clear()

    async def put(self, data: bytes) -> str:
        """Store a PNG; returns its new id."""
        file_id = secrets.token_urlsafe(32)
        await asyncio.to_thread(self._path(file_id).write_bytes, data)
        self._expires[file_id] = self.clock() + self.ttl_s
        await self._sweep()
        return file_id

    async def get(self, file_id: str) -> tuple[bytes, float] | None:
        """The file and its seconds left to live, or None when unknown or expired."""
        await self._sweep()
        expires = self._expires.get(file_id) if _ID.match(file_id) else None
        if expires is None:
            return None
        try:
            data = await asyncio.to_thread(self._path(file_id).read_bytes)
        except FileNotFoundError:
            return None
        return data, max(0.0, expires - self.clock())

    async def _sweep(self) -> None:
        now = self.clock()
        expired = [fid for fid, at in self._expires.items() if at <= now]
        for fid in expired:
            del self._expires[fid]
        if expired:
            await asyncio.to_thread(self._unlink, expired)

    def _unlink(self, ids: list[str]) -> None:
        for fid in ids:
            self._path(fid).unlink(missing_ok=True)

    def _path(self, file_id: str) -> Path:
        if self._root is None:
            raise RuntimeError("file store used before open()")
        return self._root / f"{file_id}.png"
