"""Delivery and quotas without the network's timing: the buffer bound (a metric and one log line,
never a wait), the spool, rejected batches, and token quotas on memory and on real Redis."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio
from prometheus_client import CollectorRegistry

from app import usagesink
from app.guard import Identity
from app.ratelimit import make_storage
from app.tokenlimit import InsufficientQuotaError, TokenLimiter, TokenQuota, TokenRateLimitError
from app.usagesink import Delivery, Spool, UsageMetrics

URL = "http://usage.test/v1/usage/records"


def record(n: int = 0) -> dict[str, Any]:
    return {"id": f"r{n}", "endpoint": "/v1/chat/completions", "kind": "completions",
            "model": "m", "outcome": "ok", "input_tokens": 1, "output_tokens": 2,
            "ttft_ms": None, "streamed": False}  # fmt: skip


class Ingest:
    """An ingest endpoint behind httpx.MockTransport: status by call, batches kept."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses) or [200]
        self.batches: list[list[dict[str, Any]]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if status == 0:
            raise httpx.ConnectError("refused", request=request)
        if status == 200:
            self.batches.append(orjson.loads(request.content)["records"])
        return httpx.Response(status, json={})


@pytest.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, Ingest]]:
    ingest = Ingest()
    async with httpx.AsyncClient(transport=httpx.MockTransport(ingest.handler)) as c:
        yield c, ingest


def delivery(client: httpx.AsyncClient, spool: Path, metrics: UsageMetrics, **kw: Any) -> Delivery:
    return Delivery(lambda: URL, lambda: client, "token-0123456789abcdef", lambda: metrics,
                    spool, **kw)  # fmt: skip


def value(metrics: UsageMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return float(found or 0)


@pytest.fixture
def metrics() -> UsageMetrics:
    return UsageMetrics(CollectorRegistry())


async def test_a_full_buffer_drops_with_a_metric_and_one_log_line(
    client: tuple[httpx.AsyncClient, Ingest], tmp_path: Path, metrics: UsageMetrics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    d = delivery(client[0], tmp_path, metrics, buffer_max=3)
    logs: list[str] = []
    # structlog may have cached the module's logger (an app built earlier): swap it for a spy
    monkeypatch.setattr(usagesink, "log", SimpleNamespace(warning=lambda e, **_: logs.append(e)))
    for n in range(10):
        d.submit(record(n))  # returns at once every time: no await, no I/O
    assert len(d.buffer) == 3
    assert value(metrics, "nexus_usage_records_dropped_total", reason="buffer_full") == 7
    assert logs == ["usage buffer full: records dropped"]
    assert await d.cycle()
    assert [r["id"] for r in client[1].batches[0]] == ["r0", "r1", "r2"]


async def test_unreachable_batches_go_to_the_spool_and_come_back_first(
    tmp_path: Path, metrics: UsageMetrics
) -> None:
    ingest = Ingest(0, 503, 200)
    async with httpx.AsyncClient(transport=httpx.MockTransport(ingest.handler)) as c:
        d = delivery(c, tmp_path, metrics, batch_size=2)
        for n in range(5):
            d.submit(record(n))
        assert not await d.cycle()  # connect refused: everything spooled, nothing lost
        assert len(Spool(tmp_path).batches()) == 3
        d.submit(record(5))
        assert not await d.cycle()  # 503 on the first spooled batch: still on disk
        assert await d.cycle()
    delivered = [r["id"] for batch in ingest.batches for r in batch]
    assert sorted(delivered) == [f"r{n}" for n in range(6)]
    assert delivered[-1] == "r5"  # the spool went before the newer buffer
    assert Spool(tmp_path).batches() == []
    assert value(metrics, "nexus_usage_records_delivered_total") == 6


async def test_a_rejected_batch_is_counted_not_retried_forever(
    tmp_path: Path, metrics: UsageMetrics
) -> None:
    ingest = Ingest(400)
    async with httpx.AsyncClient(transport=httpx.MockTransport(ingest.handler)) as c:
        d = delivery(c, tmp_path, metrics)
        d.submit(record())
        assert await d.cycle()
    assert value(metrics, "nexus_usage_records_dropped_total", reason="rejected") == 1
    assert Spool(tmp_path).batches() == []


async def test_close_spools_what_cannot_go(tmp_path: Path, metrics: UsageMetrics) -> None:
    ingest = Ingest(0)
    async with httpx.AsyncClient(transport=httpx.MockTransport(ingest.handler)) as c:
        d = delivery(c, tmp_path, metrics)
        for n in range(4):
            d.submit(record(n))
        await d.close()
    assert sum(len(Spool.read(p) or []) for p in Spool(tmp_path).batches()) == 4


async def test_an_unreadable_spool_file_is_set_aside(tmp_path: Path) -> None:
    (tmp_path / "0001.json").write_bytes(b"{not json")
    assert Spool.read(tmp_path / "0001.json") is None
    assert (tmp_path / "0001.bad").exists()


# --- token quotas ---------------------------------------------------------------------------


def who(**quota: int) -> Identity:
    key = f"key_13_{secrets.token_hex(6)}"
    return Identity(subject="usr_1", role="user", key_id=key, **quota)  # type: ignore[arg-type]


async def _quota_rules(limiter: TokenLimiter) -> None:
    ident = who(rate_limit_tpm=100)
    quota = TokenQuota.of(ident)
    assert quota is not None
    headers = dict(await limiter.admit(ident.limit_key, quota))
    assert headers[b"x-ratelimit-limit-tokens"] == b"100"
    assert headers[b"x-ratelimit-remaining-tokens"] == b"100"
    await limiter.charge(ident.limit_key, quota, 60)
    headers = dict(await limiter.admit(ident.limit_key, quota))
    assert headers[b"x-ratelimit-remaining-tokens"] == b"40"
    await limiter.charge(ident.limit_key, quota, 60)  # past the limit: charged anyway
    with pytest.raises(TokenRateLimitError) as refused:
        await limiter.admit(ident.limit_key, quota)
    assert refused.value.code == "rate_limit_exceeded"
    assert refused.value.envelope()["error"]["type"] == "tokens"
    assert refused.value.headers["x-ratelimit-remaining-tokens"] == "0"
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60


async def test_token_quotas_in_memory() -> None:
    await _quota_rules(TokenLimiter(make_storage(None)))
    limiter = TokenLimiter(make_storage(None))
    ident = who(token_budget_monthly=10)
    quota = TokenQuota.of(ident)
    assert quota is not None
    assert await limiter.admit(ident.limit_key, quota) == []  # no TPM: no token headers
    await limiter.charge(ident.limit_key, quota, 10)
    with pytest.raises(InsufficientQuotaError) as spent:
        await limiter.admit(ident.limit_key, quota)
    assert spent.value.envelope()["error"] == {
        "message": spent.value.message, "type": "insufficient_quota", "param": None,
        "code": "insufficient_quota",
    }  # fmt: skip
    assert TokenQuota.of(who()) is None


@pytest.mark.integration
async def test_token_quotas_shared_through_real_redis() -> None:
    """Two gateways (two limiters on one Redis): one charges, the other refuses."""
    url = "redis://127.0.0.1:6379/0"
    first, second = TokenLimiter(make_storage(url)), TokenLimiter(make_storage(url))
    ident = who(rate_limit_tpm=50)
    quota = TokenQuota.of(ident)
    assert quota is not None
    try:
        await first.charge(ident.limit_key, quota, 50)
        with pytest.raises(TokenRateLimitError):
            await second.admit(ident.limit_key, quota)
        await _quota_rules(first)
    finally:
        r = redis.asyncio.Redis.from_url(url)
        keys = [k async for k in r.scan_iter(match=f"*{ident.limit_key}*")]
        keys += [k async for k in r.scan_iter(match="*key_13_*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()
        for limiter in (first, second):
            client = getattr(getattr(limiter.limiter.storage, "bridge", None), "storage", None)
            if client is not None and hasattr(client, "aclose"):
                await client.aclose()
