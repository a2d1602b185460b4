"""The pieces of the worker supervisor, in process: the shared limit table, the metrics sum,
the OS limit check and the default worker count."""

from __future__ import annotations

import asyncio
import resource
import sys
from pathlib import Path

import pytest
from limits import RateLimitItemPerMinute
from limits.aio.strategies import FixedWindowRateLimiter, SlidingWindowCounterRateLimiter

from app import oslimits, workers
from app.aggregate import merge, requests_served
from app.ratelimit import RateLimiter, make_storage
from app.settings import GatewaySettings
from app.sharedlimits import SharedMemoryStorage, SharedTable, TableFull, create_table
from app.workers import worker_count
from nexus_kit import RateLimitError


@pytest.fixture
def table(tmp_path: Path) -> Path:
    return create_table(tmp_path / "limits.table", slots=256)


async def test_two_workers_share_one_limit_exactly(table: Path) -> None:
    workers = [RateLimiter("shm://" + str(table), 5) for _ in range(2)]  # two maps, one file
    refused = 0
    for i in range(12):
        try:
            await workers[i % 2].hit("key-a", None)
        except RateLimitError:
            refused += 1
    assert refused == 7
    quota = await workers[0].hit("key-b", None)  # another key counts on its own
    assert quota is not None
    assert quota.remaining == 4
    for worker in workers:
        await worker.close()


async def test_fixed_window_counts_token_costs_across_maps(table: Path) -> None:
    one, two = (
        SharedMemoryStorage("shm://" + str(table)),
        SharedMemoryStorage("shm://" + str(table)),
    )
    item = RateLimitItemPerMinute(100)
    assert await FixedWindowRateLimiter(one).hit(item, "tokens", cost=60)
    assert await FixedWindowRateLimiter(two).hit(item, "tokens", cost=40)
    assert not await FixedWindowRateLimiter(one).hit(item, "tokens", cost=1)
    stats = await SlidingWindowCounterRateLimiter(one).get_window_stats(item, "other")
    assert stats.remaining == 100
    one.close()
    two.close()


async def test_expired_records_are_reused_and_cleared_keys_forgotten(table: Path) -> None:
    storage = SharedMemoryStorage("shm://" + str(table))
    assert await storage.incr("k", expiry=60, amount=3) == 3
    assert await storage.get("k") == 3
    await storage.clear("k")
    assert await storage.get("k") == 0
    assert await storage.incr("k", expiry=60) == 1  # the cleared record comes back
    assert await storage.decr("k", amount=5) == 0  # never below zero
    assert await storage.reset() == 1
    storage.close()


def test_a_full_chain_raises_and_the_limiter_fails_open(tmp_path: Path) -> None:
    shared = SharedTable(create_table(tmp_path / "tiny", slots=4))
    for i in range(4):
        shared.add(f"k{i}", 60, 1, now=0.0)
    with pytest.raises(TableFull):
        shared.add("one-more", 60, 1, now=0.0)
    shared.add("one-more", 60, 1, now=120.0)  # the others expired: their records are reused
    shared.close()


def test_storage_urls() -> None:
    assert type(make_storage("")).__name__ == "MemoryStorage"
    with pytest.raises(ValueError, match="not a Nexus limit table"):
        make_storage("shm:///dev/null")


EXPOSITION = """# HELP nexus_http_requests_total HTTP requests.
# TYPE nexus_http_requests_total counter
nexus_http_requests_total{{route="/a",status="200"}} {a}
# HELP nexus_http_requests_created HTTP requests.
# TYPE nexus_http_requests_created gauge
nexus_http_requests_created{{route="/a",status="200"}} {created}
# HELP nexus_gateway_routes Routes.
# TYPE nexus_gateway_routes gauge
nexus_gateway_routes {routes}
# HELP nexus_gateway_requests_in_flight In flight.
# TYPE nexus_gateway_requests_in_flight gauge
nexus_gateway_requests_in_flight {flying}
# HELP lat Latency.
# TYPE lat histogram
lat_bucket{{le="0.1"}} {a}
lat_bucket{{le="+Inf"}} {a}
lat_count {a}
lat_sum 0.5
"""


def test_merge_adds_counters_and_gauges_keeps_shared_facts() -> None:
    one = EXPOSITION.format(a=3, created=100, routes=7, flying=2)
    two = EXPOSITION.format(a=4, created=90, routes=6, flying=5)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in merge([one, two])
        for s in family.samples
    }
    route = (("route", "/a"), ("status", "200"))
    assert samples[("nexus_http_requests_total", route)] == 7
    assert samples[("nexus_http_requests_created", route)] == 90
    assert samples[("nexus_gateway_routes", ())] == 7
    assert samples[("nexus_gateway_requests_in_flight", ())] == 7
    assert samples[("lat_bucket", (("le", "0.1"),))] == 7
    assert samples[("lat_sum", ())] == 1.0
    assert requests_served(one) == 3


def test_os_limits_warn_when_too_low(tmp_path: Path) -> None:
    somaxconn = tmp_path / "somaxconn"
    somaxconn.write_text("128\n")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = oslimits.Need(client_connections=hard + 10, upstream_connections=10, backlog=2048)
    warnings = oslimits.check(need, somaxconn)
    assert len(warnings) == 2
    assert "RLIMIT_NOFILE" in warnings[0]
    assert "somaxconn is 128" in warnings[1]
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= soft  # raised, never lowered
    somaxconn.write_text("4096\n")
    assert oslimits.check(oslimits.Need(100, 100, 1024), somaxconn) == []


def test_worker_count_follows_the_setting_then_affinity_and_quota(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    assert worker_count(3, cpu_max) == 3
    assert worker_count(0, cpu_max) >= 1  # no quota file: the affinity
    cpu_max.write_text("150000 100000\n")
    assert worker_count(0, cpu_max) == min(2, worker_count(0, tmp_path / "none"))
    cpu_max.write_text("max 100000\n")
    assert worker_count(0, cpu_max) == worker_count(0, tmp_path / "none")


async def test_a_worker_that_keeps_dying_at_start_stops_the_supervisor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Real child processes that exit at once: replaced, then given up on (exit 1)."""
    monkeypatch.setattr(workers, "YOUNG_S", 60.0)
    monkeypatch.setattr(workers, "GIVE_UP_AFTER", 3)
    settings = GatewaySettings(gateway_metrics_port=0, shutdown_grace_s=1)
    supervisor = workers.Supervisor(settings, "127.0.0.1", 0, 1)
    spawned: list[int] = []

    async def crashing(worker: workers.Worker) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "raise SystemExit(3)")
        spawned.append(proc.pid)
        return proc

    monkeypatch.setattr(supervisor, "_spawn", crashing)
    assert await asyncio.wait_for(supervisor.run(), 60) == 1
    assert len(spawned) == 3
    assert supervisor.restarts == 2
