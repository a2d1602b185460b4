"""Rate-limit counters shared by every gateway worker on one host: a table in shared memory.

The worker supervisor (``workers.py``) creates one file (in ``/dev/shm`` when there is one),
sized for ``slots`` counters, and hands its path to every worker as
``RATE_LIMIT_STORAGE_URL=shm://<path>``; each worker maps it and counts in it. It is a
``limits`` storage (fixed window and sliding window counter), so request limits and token
quotas built on ``limits`` strategies count once per host however many workers serve
(docs/adr/0012-gateway-workers.md says why this over a counter process or SQLite).

Layout: a 16-byte header (magic, slot count), then ``slots`` records of 32 bytes: a 16-byte
BLAKE2b digest of the key (all zeros: never used), the count (int64) and its expiry (unix
time, float64). Keys live in open addressing with linear probing; an expired record is reused
by the next new key on its chain. Every operation holds ``flock`` on the file for a few
microseconds, so a check-and-increment is atomic across processes: N workers sending
``limit + k`` requests get exactly ``k`` refusals. A full chain raises ``TableFull`` and the
caller fails open (as it does when Redis is down).
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import time
from math import floor
from pathlib import Path

from limits.aio.storage import SlidingWindowCounterSupport, Storage
from limits.storage.base import TimestampedSlidingWindow

SCHEME = "shm://"
MAGIC = b"NXLIMIT1"
HEADER = struct.Struct("<8sQ")
RECORD = struct.Struct("<16sqd")
EMPTY = bytes(16)
MAX_PROBE = 64
DEFAULT_SLOTS = 1 << 16  # 2 MiB; every limited key uses two (this window and the last)
HOMES_KEPT = 4096  # digests remembered per process


class TableFull(RuntimeError):
    """No free record within MAX_PROBE of a key's home slot."""


def create_table(path: Path, slots: int = DEFAULT_SLOTS) -> Path:
    """Create (or truncate) the table file; the supervisor does this once before the workers."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, HEADER.size + slots * RECORD.size)
        os.pwrite(fd, HEADER.pack(MAGIC, slots), 0)
    finally:
        os.close(fd)
    return path


def default_table_dir() -> Path:
    shm = Path("/dev/shm")
    return (
        shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(os.environ.get("TMPDIR", "/tmp"))
    )


class SharedTable:
    """The mapped file; synchronous, each call a few microseconds under ``flock``."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR)
        try:
            self.map = mmap.mmap(self.fd, 0)
        except (OSError, ValueError):
            os.close(self.fd)
            raise ValueError(f"{path} is not a Nexus limit table") from None
        self._homes: dict[str, tuple[bytes, int]] = {}
        magic, self.slots = HEADER.unpack_from(self.map, 0)
        if magic != MAGIC or len(self.map) < HEADER.size + self.slots * RECORD.size:
            self.close()
            raise ValueError(f"{path} is not a Nexus limit table")

    def close(self) -> None:
        if not self.map.closed:
            self.map.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def locked(self) -> SharedTable:
        """``with table.locked():`` holds ``flock`` on the file (a plain context manager: this is
        on every request's path)."""
        return self

    def __enter__(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _home(self, key: str) -> tuple[bytes, int]:
        """The key's digest and home slot, remembered (a request asks for the same few keys)."""
        found = self._homes.get(key)
        if found is None:
            if len(self._homes) >= HOMES_KEPT:
                self._homes.clear()
            digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
            found = self._homes[key] = (digest, int.from_bytes(digest[:8], "little") % self.slots)
        return found

    def _find(self, key: str, now: float) -> tuple[int, bytes, bool]:
        """(record offset, digest, found) for ``key``; the offset is where a new one goes."""
        digest, home = self._home(key)
        free = -1
        for step in range(MAX_PROBE):
            offset = HEADER.size + ((home + step) % self.slots) * RECORD.size
            stored, _, expiry = RECORD.unpack_from(self.map, offset)
            if stored == digest:
                return offset, digest, True
            if stored == EMPTY:
                return (free if free >= 0 else offset), digest, False
            if free < 0 and expiry <= now:
                free = offset
        if free < 0:
            raise TableFull(f"no free record near {key[:60]!r}; raise the table size")
        return free, digest, False

    def get(self, key: str, now: float) -> tuple[int, float]:
        """(count, expiry); (0, now) when absent or expired. Caller holds the lock."""
        offset, _, found = self._find(key, now)
        if not found:
            return 0, now
        _, count, expiry = RECORD.unpack_from(self.map, offset)
        return (count, expiry) if expiry > now else (0, now)

    def add(self, key: str, expiry_s: float, amount: int, now: float) -> int:
        """Add to the count (a new or expired key starts at ``amount``, expiring in
        ``expiry_s``); never below 0. Caller holds the lock."""
        offset, digest, found = self._find(key, now)
        count, expiry = 0, now + expiry_s
        if found:
            _, old, old_expiry = RECORD.unpack_from(self.map, offset)
            if old_expiry > now:
                count, expiry = old, old_expiry
        count = max(count + amount, 0)
        RECORD.pack_into(self.map, offset, digest, count, expiry)
        return count

    def clear(self, key: str, now: float) -> None:
        offset, digest, found = self._find(key, now)
        if found:  # expired, not emptied: an empty record would cut other keys' chains
            RECORD.pack_into(self.map, offset, digest, 0, 0.0)

    def reset(self) -> int:
        used = 0
        for slot in range(self.slots):
            offset = HEADER.size + slot * RECORD.size
            if self.map[offset : offset + 16] != EMPTY:
                used += 1
        self.map[HEADER.size :] = bytes(self.slots * RECORD.size)
        return used


class SharedMemoryStorage(Storage, SlidingWindowCounterSupport, TimestampedSlidingWindow):
    """A ``limits`` async storage over ``SharedTable`` (fixed and sliding window counters)."""

    STORAGE_SCHEME = ["async+nexus-shm"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **_: str) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        if not uri or "://" not in uri:
            raise ValueError("shared limit storage needs shm://<path of the table file>")
        self.path = Path(uri.split("://", 1)[1])
        self.table = SharedTable(self.path)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return (OSError, ValueError, TableFull)

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        with self.table.locked():
            return self.table.add(key, expiry, amount, time.time())

    async def decr(self, key: str, amount: int = 1) -> int:
        with self.table.locked():
            return self.table.add(key, 0.0, -amount, time.time())

    async def get(self, key: str) -> int:
        with self.table.locked():
            return self.table.get(key, time.time())[0]

    async def get_expiry(self, key: str) -> float:
        with self.table.locked():
            return self.table.get(key, time.time())[1]

    async def check(self) -> bool:
        return not self.table.map.closed

    async def reset(self) -> int | None:
        with self.table.locked():
            return self.table.reset()

    async def clear(self, key: str) -> None:
        with self.table.locked():
            self.table.clear(key, time.time())

    async def acquire_sliding_window_entry(
        self, key: str, limit: int, expiry: int, amount: int = 1
    ) -> bool:
        """limits' sliding window counter, checked and counted under one lock: exact."""
        if amount > limit:
            return False
        now = time.time()
        previous_key, current_key = self.sliding_window_keys(key, expiry, now)
        with self.table.locked():
            previous, previous_ttl, current, _ = self._window(
                previous_key, current_key, expiry, now
            )
            if floor(previous * previous_ttl / expiry + current) + amount > limit:
                return False
            self.table.add(current_key, 2 * expiry, amount, now)
            return True

    async def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        now = time.time()
        previous_key, current_key = self.sliding_window_keys(key, expiry, now)
        with self.table.locked():
            return self._window(previous_key, current_key, expiry, now)

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        now = time.time()
        previous_key, current_key = self.sliding_window_keys(key, expiry, now)
        with self.table.locked():
            self.table.clear(current_key, now)
            self.table.clear(previous_key, now)

    def _window(
        self, previous_key: str, current_key: str, expiry: int, now: float
    ) -> tuple[int, float, int, float]:
        """The same arithmetic as limits' MemoryStorage (``_get_sliding_window_info``)."""
        previous = self.table.get(previous_key, now)[0]
        current = self.table.get(current_key, now)[0]
        previous_ttl = 0.0 if previous == 0 else (1 - (((now - expiry) / expiry) % 1)) * expiry
        current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
        return previous, previous_ttl, current, current_ttl

    def close(self) -> None:
        self.table.close()
