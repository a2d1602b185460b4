"""The usage spool's bound and its sharing between worker processes.

Bound: a batch that would take the spool past ``USAGE_SPOOL_MAX_BYTES`` is dropped, counted in
``nexus_usage_records_dropped_total{reason="spool_full"}`` and said in one log line; the
request path never waits. Sharing: real processes drain one spool directory at once; every
batch reaches the ingest exactly once (claims by rename), and a claim left by a dead sender is
put back and delivered.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from app import usagesink
from app.settings import GatewaySettings
from app.usagesink import Delivery, Spool, UsageMetrics

URL = "http://usage.test/v1/usage/records"
SERVICE_DIR = Path(__file__).resolve().parents[1]


def record(n: int) -> dict[str, Any]:
    return {"id": f"r{n}", "endpoint": "/v1/chat/completions", "kind": "completions",
            "model": "m", "outcome": "ok", "input_tokens": 1, "output_tokens": 2,
            "ttft_ms": None, "streamed": False}  # fmt: skip


def list_dir(path: Path) -> list[Path]:
    return list(path.iterdir())


def dropped(metrics: UsageMetrics, reason: str) -> float:
    found = metrics.registry.get_sample_value(
        "nexus_usage_records_dropped_total", {"reason": reason}
    )
    return float(found or 0)


async def test_the_spool_is_bounded_drops_counted_and_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = UsageMetrics(CollectorRegistry())
    logs: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(
        usagesink, "log", SimpleNamespace(warning=lambda e, **kw: logs.append((e, kw)),
                                          info=lambda *a, **k: None),
    )  # fmt: skip
    one_batch = len(orjson.dumps([record(0), record(1)]))
    refused = httpx.MockTransport(lambda r: httpx.Response(503, json={}))
    async with httpx.AsyncClient(transport=refused) as client:
        d = Delivery(lambda: URL, lambda: client, None, lambda: metrics, tmp_path,
                     batch_size=2, spool_max_bytes=2 * one_batch + one_batch // 2)  # fmt: skip
        for n in range(10):
            d.submit(record(n))
        assert not await d.cycle()  # 5 batches: 2 fit on disk, 3 dropped
        d.submit(record(10))
        await d.close()  # the last one does not fit either
    spooled = [r["id"] for p in Spool(tmp_path).batches() for r in Spool.read(p) or []]
    assert spooled == ["r0", "r1", "r2", "r3"]
    assert Spool(tmp_path).size() <= 2 * one_batch + one_batch // 2
    assert dropped(metrics, "spool_full") == 7
    full = [kw for e, kw in logs if e.startswith("usage spool full")]
    assert len(full) == 1  # one line for 7 drops, not one per batch
    assert full[0]["max_bytes"] == 2 * one_batch + one_batch // 2


def test_the_bound_is_a_setting() -> None:
    assert GatewaySettings().usage_spool_max_bytes == 1024**3
    settings = GatewaySettings(usage_spool_max_bytes=65536)  # type: ignore[call-arg]
    assert settings.usage_spool_max_bytes == 65536
    with pytest.raises(ValueError, match="usage_spool_max_bytes"):
        GatewaySettings(usage_spool_max_bytes=0)  # type: ignore[call-arg]


async def test_a_failed_send_puts_the_claimed_batch_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    assert spool.write([record(1)])
    metrics = UsageMetrics(CollectorRegistry())
    refused = httpx.MockTransport(lambda r: httpx.Response(503, json={}))
    async with httpx.AsyncClient(transport=refused) as client:
        d = Delivery(lambda: URL, lambda: client, None, lambda: metrics, tmp_path)
        assert not await d.cycle()
    assert [p.suffix for p in list_dir(tmp_path)] == [".json"]  # not left claimed


def test_claims_of_dead_or_stale_senders_are_put_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path, claim_stale_s=60)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(dead.stdout)
    live_pid = os.getppid()  # alive for the whole test (pytest's parent)
    (tmp_path / f"0001.{dead_pid}.claim").write_bytes(orjson.dumps([record(1)]))
    (tmp_path / f"0002.{live_pid}.claim").write_bytes(orjson.dumps([record(2)]))
    (tmp_path / f"0004.{2**80}.claim").write_bytes(orjson.dumps([record(4)]))  # no such pid
    old = tmp_path / f"0003.{live_pid}.claim"
    old.write_bytes(orjson.dumps([record(3)]))
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert [p.name for p in spool.batches()] == ["0001.json", "0003.json", "0004.json"]
    held = spool.claim(tmp_path / "0001.json")
    assert held is not None
    assert spool.claim(tmp_path / "0001.json") is None  # one claim wins
    assert [p.name for p in spool.batches()] == ["0003.json", "0004.json"]  # ours stays held
    other = Spool(tmp_path)  # another Spool of this process (a second app): same holds
    assert [p.name for p in other.batches()] == ["0003.json", "0004.json"]
    spool.release(held)
    assert [p.name for p in other.batches()] == ["0001.json", "0003.json", "0004.json"]
    assert spool.size() == sum(p.stat().st_size for p in tmp_path.iterdir())


WORKER = """
import asyncio, sys, time
from pathlib import Path
import httpx, orjson
from prometheus_client import CollectorRegistry
from app.usagesink import Delivery, UsageMetrics

spool, out, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

def ingest(request):
    time.sleep(0.002)  # a network's worth of time: the other workers see the file meanwhile
    with out.open("ab") as f:  # one line per delivered batch, appended whole
        f.write(orjson.dumps(orjson.loads(request.content)["records"]) + b"\\n")
    return httpx.Response(200, json={})

async def main():
    metrics = UsageMetrics(CollectorRegistry())
    async with httpx.AsyncClient(transport=httpx.MockTransport(ingest)) as client:
        d = Delivery(lambda: "http://usage.test/ingest", lambda: client, None,
                     lambda: metrics, spool)
        while not go.exists():  # start together (bounded by the test's timeout)
            await asyncio.sleep(0.005)
        for _ in range(3):
            assert await d.cycle()

asyncio.run(main())
"""


@pytest.mark.integration
def test_worker_processes_sharing_a_spool_send_each_batch_exactly_once(tmp_path: Path) -> None:
    spool_dir, outputs, go = tmp_path / "spool", tmp_path / "out", tmp_path / "go"
    outputs.mkdir()
    spool = Spool(spool_dir)
    batches = 200
    for b in range(batches):
        assert spool.write([record(b * 3 + i) for i in range(3)])
    stale = spool_dir / "00000000000000000000-1-dead.999999999.claim"  # a crashed sender's
    stale.write_bytes(orjson.dumps([record(10_000)]))
    env = {**os.environ, "PYTHONPATH": str(SERVICE_DIR)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(spool_dir), str(outputs / f"{w}"), str(go)],
            cwd=SERVICE_DIR,
            env=env,
        )
        for w in range(4)
    ]
    try:
        go.touch()
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert codes == [0, 0, 0, 0]
    lines = [line for w in range(4) if (outputs / f"{w}").exists()
             for line in (outputs / f"{w}").read_bytes().splitlines()]  # fmt: skip
    ids = [r["id"] for line in lines for r in orjson.loads(line)]
    assert len(lines) == batches + 1  # each file sent once: no replay
    assert sorted(ids) == sorted([f"r{n}" for n in range(batches * 3)] + ["r10000"])
    assert len(set(ids)) == len(ids)
    assert list(spool_dir.iterdir()) == []  # nothing left behind, claimed or not
    senders = sum(1 for w in range(4) if (outputs / f"{w}").exists())
    assert senders >= 1


def test_the_default_spool_is_one_gateways_own() -> None:
    from app.usagesink import default_spool_dir

    mine = default_spool_dir("gateway", 8800)
    assert mine == default_spool_dir("gateway", 8800)  # a restart finds its records again
    assert mine != default_spool_dir("gateway", 18800)  # another gateway on the host: not its
    assert mine != default_spool_dir("gateway-b", 8800)


def test_bound_checked_without_a_scan_per_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound uses one directory scan per ``RESCAN_S`` plus this process's own writes: a
    spool of thousands of files is not rescanned for every batch (issue 14), yet still holds."""
    one_batch = len(orjson.dumps([record(0)]))
    spool = Spool(tmp_path, max_bytes=3 * one_batch)
    scans: list[int] = []
    real_size = Spool.size

    def counted(self: Spool) -> int:
        scans.append(1)
        return real_size(self)

    monkeypatch.setattr(Spool, "size", counted)
    written = [spool.write([record(n)]) for n in range(5)]
    assert written == [True, True, True, False, False]  # own writes counted between scans
    assert len(scans) == 1
    assert spool._known is not None
    spool._known = (spool._known[0] - usagesink.RESCAN_S, spool._known[1])  # the scan aged
    for path in tmp_path.glob("*.json"):
        spool.remove(path)  # delivered (by any worker): seen at the next scan
    assert spool.write([record(9)])
    assert len(scans) == 2
