"""Token quotas per key: tokens per minute, and token budgets per day and per month (UTC).

The limits are key fields in the auth service (``rate_limit_tpm``, ``token_budget_daily``,
``token_budget_monthly``), carried in introspection. They are counted on the same ``limits``
storage as the request limits (memory, Redis when ``RATE_LIMIT_STORAGE_URL`` says so, or the
workers' shared table), with fixed windows: the minute from the key's first use, the calendar
day and month. A request is admitted while its windows have room, and charged its actual usage
(input + output tokens) when it ends (usagesink.py); a request may so take a window past its
limit, and the next one waits for the reset. Refusals are OpenAI's: 429 ``rate_limit_exceeded``
with type ``tokens`` (TPM) or 429 ``insufficient_quota`` (a spent budget), with
``Retry-After``; every response of a key with a TPM limit carries ``x-ratelimit-limit-tokens``,
``-remaining-tokens`` and ``-reset-tokens`` (OpenAI's duration format, e.g. ``6m0s``): model
endpoints from ``admit``, every other path (``/v1/models``, the usage API, a request-limit 429)
from ``peek``, which reads the window and never refuses (one storage read). The budgets have no
headers. Quotas are key fields: a JWT caller has no key, so none apply to it.
When the storage is down, quotas fail open (a warning), as request limits do.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute, RateLimitItemPerYear
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter

from nexus_kit import RateLimitError, get_logger

from .durations import openai_duration

log = get_logger("nexus.gateway.tokenlimit")


class TokenRateLimitError(RateLimitError):
    error_type = "tokens"


class InsufficientQuotaError(RateLimitError):
    error_type = "insufficient_quota"
    default_code = "insufficient_quota"


@dataclass(frozen=True, slots=True)
class TokenQuota:
    tpm: int | None = None
    daily: int | None = None
    monthly: int | None = None

    @classmethod
    def of(cls, identity: Any) -> TokenQuota | None:
        quota = cls(
            _positive(getattr(identity, "rate_limit_tpm", None)),
            _positive(getattr(identity, "token_budget_daily", None)),
            _positive(getattr(identity, "token_budget_monthly", None)),
        )
        return quota if quota.tpm or quota.daily or quota.monthly else None


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


class TokenLimiter:
    def __init__(self, storage: Storage) -> None:
        self.limiter = FixedWindowRateLimiter(storage)
        self._items: dict[tuple[str, int], RateLimitItem] = {}
        self._calendar_at = -1
        self._calendar_ids = ("", "")

    def _windows(self, quota: TokenQuota) -> list[tuple[str, RateLimitItem, str]]:
        """(name, item, window id) per configured limit."""
        day, month = self._calendar()
        out: list[tuple[str, RateLimitItem, str]] = []
        if quota.tpm:
            out.append(("tpm", self._item("tpm", quota.tpm), ""))
        if quota.daily:
            out.append(("daily", self._item("daily", quota.daily), day))
        if quota.monthly:
            out.append(("monthly", self._item("monthly", quota.monthly), month))
        return out

    def _calendar(self) -> tuple[str, str]:
        """Today's and this month's window ids (UTC), worked out once a second."""
        second = int(time.time())
        if self._calendar_at != second:
            now = datetime.fromtimestamp(second, UTC)
            self._calendar_ids = (now.strftime("%Y%m%d"), now.strftime("%Y%m"))
            self._calendar_at = second
        return self._calendar_ids

    def _item(self, name: str, amount: int) -> RateLimitItem:
        item = self._items.get((name, amount))
        if item is None:
            # Calendar windows carry their date in the key; the item's expiry only cleans up.
            cls = {"tpm": RateLimitItemPerMinute, "daily": RateLimitItemPerDay,
                   "monthly": RateLimitItemPerYear}[name]  # fmt: skip
            item = self._items[(name, amount)] = cls(amount, namespace="nexus-tokens")
        return item

    async def admit(self, key: str, quota: TokenQuota) -> list[tuple[bytes, bytes]]:
        """Headers for the response; raises 429 when a window is used up."""
        headers: list[tuple[bytes, bytes]] = []
        try:
            for name, item, window in self._windows(quota):
                if name != "tpm":  # a budget: its count is all we need (one storage read)
                    spent = await self.limiter.storage.get(item.key_for(name, key, window))
                    if spent >= item.amount:
                        raise _refusal(InsufficientQuotaError, item, f"{name} budget",
                                       _calendar_reset(name), headers)  # fmt: skip
                    continue
                stats = await self.limiter.get_window_stats(item, name, key, window)
                started = stats.remaining < item.amount
                reset_s = max(stats.reset_time - time.time(), 0.0) if started else 0.0
                headers = _headers(item.amount, stats.remaining, reset_s)
                if stats.remaining <= 0:
                    raise _refusal(TokenRateLimitError, item, "per minute (TPM)",
                                   reset_s, headers)  # fmt: skip
        except RateLimitError:
            raise
        except Exception as exc:
            log.warning("token-limit storage unavailable; not limiting", error=type(exc).__name__)
            return []
        return headers

    async def peek(self, key: str, quota: TokenQuota) -> list[tuple[bytes, bytes]]:
        """The TPM headers without admitting anything (every non-model response of the key):
        one storage read, never a refusal, nothing when the key has no TPM limit."""
        if not quota.tpm:
            return []
        item = self._item("tpm", quota.tpm)
        try:
            stats = await self.limiter.get_window_stats(item, "tpm", key, "")
        except Exception as exc:
            log.warning("token-limit storage unavailable; no token headers",
                        error=type(exc).__name__)  # fmt: skip
            return []
        started = stats.remaining < item.amount
        return _headers(item.amount, stats.remaining,
                        max(stats.reset_time - time.time(), 0.0) if started else 0.0)  # fmt: skip

    async def charge(self, key: str, quota: TokenQuota, tokens: int) -> None:
        """Count a finished request's tokens in every window of the key."""
        try:
            for name, item, window in self._windows(quota):
                await self.limiter.hit(item, name, key, window, cost=tokens)
        except Exception as exc:
            log.warning("token-limit storage unavailable; usage not charged",
                        error=type(exc).__name__)  # fmt: skip


def _refusal(
    cls: type[RateLimitError], item: RateLimitItem, what: str, reset_s: float,
    headers: list[tuple[bytes, bytes]],
) -> RateLimitError:  # fmt: skip
    return cls(
        f"Token limit reached for this key: {item.amount} tokens {what}.",
        retry_after=max(1, math.ceil(reset_s)),
        headers={k.decode(): v.decode() for k, v in headers},
    )


def _headers(limit: int, remaining: int, reset_s: float) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-ratelimit-limit-tokens", str(limit).encode()),
        (b"x-ratelimit-remaining-tokens", str(max(remaining, 0)).encode()),
        (b"x-ratelimit-reset-tokens", openai_duration(reset_s).encode()),
    ]


def _calendar_reset(name: str) -> float:
    now = datetime.now(UTC)
    if name == "daily":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return 86_400 - (now - start).total_seconds()
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return (datetime(year, month, 1, tzinfo=UTC) - now).total_seconds()
