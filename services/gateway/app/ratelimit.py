"""Per-key request limits with the ``limits`` library: in memory, or Redis for several gateways.

Every authenticated response carries OpenAI's ``x-ratelimit-*-requests`` headers; a request
over the limit gets 429 ``rate_limit_exceeded`` with ``Retry-After``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from nexus_kit import RateLimitError, get_logger

from .durations import openai_duration
from .sharedlimits import SCHEME as SHARED_SCHEME
from .sharedlimits import SharedMemoryStorage

log = get_logger("nexus.gateway.ratelimit")


@dataclass(frozen=True, slots=True)
class Quota:
    limit: int
    remaining: int
    reset_s: float

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-ratelimit-limit-requests", str(self.limit).encode()),
            (b"x-ratelimit-remaining-requests", str(self.remaining).encode()),
            (b"x-ratelimit-reset-requests", openai_duration(self.reset_s).encode()),
        ]


def make_storage(url: str | None) -> Storage:
    if url and url.startswith(SHARED_SCHEME):  # the workers' shared table (workers.py)
        return SharedMemoryStorage(url)
    if url and url.startswith(("redis://", "rediss://")):
        # redis-py (already a dependency) rather than limits' default coredis client.
        return RedisStorage("async+" + url, implementation="redispy")
    return MemoryStorage()


class RateLimiter:
    def __init__(self, storage_url: str | None, default_rpm: int) -> None:
        self.storage = make_storage(storage_url)
        # Sliding-window counter: O(1) per hit in memory and Redis (a moving window keeps every
        # timestamp, which costs O(limit) per request for a generous key).
        self.limiter = SlidingWindowCounterRateLimiter(self.storage)
        self.default_rpm = default_rpm
        self._items: dict[int, RateLimitItemPerMinute] = {}

    def _item(self, rpm: int) -> RateLimitItemPerMinute:
        item = self._items.get(rpm)
        if item is None:
            item = self._items[rpm] = RateLimitItemPerMinute(rpm)
        return item

    async def hit(self, key: str, rpm: int | None) -> Quota | None:
        """Count one request; None when unlimited (rpm 0). Raises 429 when over."""
        limit = rpm if rpm is not None else self.default_rpm
        if limit <= 0:
            return None
        item = self._item(limit)
        try:
            allowed = await self.limiter.hit(item, "nexus-key", key)
            stats = await self.limiter.get_window_stats(item, "nexus-key", key)
        except Exception as exc:
            # The counter store (Redis) is down: serve unlimited rather than fail every call;
            # limits protect capacity, and losing them for a moment is the lesser harm.
            log.warning("rate-limit storage unavailable; not limiting", error=type(exc).__name__)
            return None
        quota = Quota(limit, stats.remaining, stats.reset_time - time.time())
        if not allowed:
            raise RateLimitError(
                f"Rate limit reached: {limit} requests per minute for this key.",
                retry_after=max(1, math.ceil(quota.reset_s)),
                headers={k.decode(): v.decode() for k, v in quota.headers()},
            )
        return quota

    async def check(self) -> bool:
        return bool(await self.storage.check())

    async def close(self) -> None:
        """Close the Redis connection pool (limits has no public close; the bridge holds it)."""
        if isinstance(self.storage, SharedMemoryStorage):
            self.storage.close()
            return
        client = getattr(getattr(self.storage, "bridge", None), "storage", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()
