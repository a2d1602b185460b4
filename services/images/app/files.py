"""Generated files behind capability URLs: unguessable ids that expire.

An id is 256 random bits, so knowing the URL is the permission: the gateway serves
``GET /v1/images/files/{id}`` without a bearer. The directory itself is the index (a file's
age is its modification time), so replicas that share ``IMAGES_FILES_DIR`` serve each other's
files, whichever one the gateway picks. Without ``IMAGES_FILES_DIR`` each process keeps a
private temporary directory, removed at shutdown.
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

_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)
_SUFFIX = ".png"


class FileStore:
    def __init__(
        self, shared_dir: str, ttl_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.shared_dir = Path(shared_dir) if shared_dir else None
        self.ttl_s = ttl_s
        # Wall-clock time, as file modification times are.
        self.clock = clock
        self.sweep_every_s = min(60.0, ttl_s)
        self._root: Path | None = None
        self._private = False
        self._last_sweep = 0.0

    async def open(self) -> None:
        if self.shared_dir is None:
            self._root = Path(await asyncio.to_thread(tempfile.mkdtemp, "", "nexus-images-"))
            self._private = True
        else:
            await asyncio.to_thread(self.shared_dir.mkdir, parents=True, exist_ok=True)
            self._root = self.shared_dir

    async def close(self) -> None:
        if self._root is not None and self._private:
            await asyncio.to_thread(shutil.rmtree, self._root, True)
        self._root = None

    async def put(self, data: bytes) -> str:
        """Store a PNG; returns its new id."""
        file_id = secrets.token_urlsafe(32)
        await asyncio.to_thread(self._path(file_id).write_bytes, data)
        if self.clock() - self._last_sweep >= self.sweep_every_s:
            await self.sweep()
        return file_id

    async def get(self, file_id: str) -> tuple[bytes, float] | None:
        """The file and its seconds left to live, or None when unknown or expired."""
        if not _ID.match(file_id):
            return None
        return await asyncio.to_thread(self._read, self._path(file_id))

    async def sweep(self) -> int:
        """Delete expired files; returns how many."""
        self._last_sweep = self.clock()
        return await asyncio.to_thread(self._sweep)

    def _read(self, path: Path) -> tuple[bytes, float] | None:
        try:
            left = path.stat().st_mtime + self.ttl_s - self.clock()
            if left <= 0:
                path.unlink(missing_ok=True)
                return None
            return path.read_bytes(), left
        except FileNotFoundError:
            return None

    def _sweep(self) -> int:
        assert self._root is not None
        deadline = self.clock() - self.ttl_s
        removed = 0
        for path in self._root.glob(f"*{_SUFFIX}"):
            try:
                if path.stat().st_mtime <= deadline:
                    path.unlink(missing_ok=True)
                    removed += 1
            except FileNotFoundError:
                continue  # another replica swept it first
        return removed

    def _path(self, file_id: str) -> Path:
        if self._root is None:
            raise RuntimeError("file store used before open()")
        return self._root / f"{file_id}{_SUFFIX}"
