"""Two gateway workers (``python -m app.workers``, ``GATEWAY_WORKERS=2``) share one usage
spool, as they do in a container: while the usage service is away both spool what they cannot
deliver into the same directory; once it is back, every record is stored once and the
gateway's one metrics view counts each delivered exactly once (no batch sent by two workers),
and the spool is left empty (no batch stranded, none left claimed)."""

from __future__ import annotations

import re
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from nexus_testing import ServiceProcess, UvicornThread, free_port, wait_until
from tests.usage_fakes import COMPLETION_TOKENS, PROMPT_TOKENS, fake_llm

pytestmark = pytest.mark.integration
GATEWAY_DIR = Path(__file__).resolve().parents[1]
USAGE_DIR = GATEWAY_DIR.parent / "usage"
INTERNAL = secrets.token_urlsafe(24)
ADMIN_VIEW = {"x-nexus-subject": "usr_test", "x-nexus-role": "admin"}
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
SENT = 24


@pytest.fixture
def llm() -> Iterator[UvicornThread]:
    with UvicornThread(fake_llm()) as upstream:
        yield upstream


def spooled(spool: Path) -> tuple[int, set[str]]:
    """Records on disk and the pids of the workers that wrote them."""
    files = list(spool.glob("*.json"))
    records = sum(len(orjson.loads(p.read_bytes())) for p in files)
    return records, {p.name.split("-")[1] for p in files}


def metric(metrics_url: str, name: str) -> float:
    text = httpx.get(metrics_url, timeout=10).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def stored(usage_url: str) -> tuple[int, int, int]:
    since = int(time.time()) // 86_400 * 86_400 - 86_400  # yesterday and today: two buckets
    resp = httpx.get(
        f"{usage_url}/v1/organization/usage/completions", headers=ADMIN_VIEW, timeout=10,
        params={"start_time": since, "bucket_width": "1d", "limit": 2},
    )  # fmt: skip
    resp.raise_for_status()
    results = [r for b in resp.json()["data"] for r in b["results"]]
    return (sum(r["num_model_requests"] for r in results),
            sum(r["input_tokens"] for r in results),
            sum(r["output_tokens"] for r in results))  # fmt: skip


def test_two_workers_share_a_spool_and_deliver_every_record_once(
    llm: UvicornThread, tmp_path: Path
) -> None:
    usage_port, metrics_port, port = free_port(), free_port(), free_port()
    spool = tmp_path / "spool"
    usage = ServiceProcess(USAGE_DIR, port=usage_port, env={
        "ETCD_ENDPOINTS": "", "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'usage.db'}",
        "NEXUS_INTERNAL_TOKEN": INTERNAL, "LOG_LEVEL": "WARNING",
    })  # fmt: skip
    gateway = ServiceProcess(GATEWAY_DIR, port=port, env={
        "ETCD_ENDPOINTS": "", "OLLAMA_BASE_URL": "off", "NEXUS_AUTH_ENABLED": "false",
        "LLM_BASE_URL": llm.url, "USAGE_BASE_URL": f"http://127.0.0.1:{usage_port}",
        "NEXUS_INTERNAL_TOKEN": INTERNAL, "GATEWAY_WORKERS": "2",
        "GATEWAY_METRICS_PORT": str(metrics_port), "GATEWAY_METRICS_HOST": "127.0.0.1",
        "USAGE_SPOOL_DIR": str(spool), "USAGE_FLUSH_INTERVAL_S": "0.05",
        "USAGE_RETRY_MAX_S": "0.5", "USAGE_BATCH_SIZE": "3", "SHUTDOWN_GRACE_S": "2",
        "DISCOVERY_RETRY_MAX_S": "0.5",  # usage's metadata is fetched soon after it is back
    }, args=[sys.executable, "-m", "app.workers", "--host", "127.0.0.1", "--port", str(port)],
    )  # fmt: skip
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        gateway.start(wait="/readyz", timeout_s=60)
        wait_until(lambda: metric(metrics_url, "nexus_gateway_workers") == 2, 60, "two workers")
        writers: set[str] = set()
        for _ in range(SENT):  # a new connection each: the kernel spreads them over the workers
            with httpx.Client(timeout=20) as client:
                assert (
                    client.post(f"{gateway.url}/v1/chat/completions", json=CHAT).status_code == 200
                )
        wait_until(lambda: spooled(spool)[0] == SENT, 30, "every record spooled (usage away)")
        writers = spooled(spool)[1]
        usage.start(wait="/readyz")
        wait_until(lambda: stored(usage.url)[0] == SENT, 60, "every record stored")
        wait_until(lambda: not any(spool.iterdir()), 30, "the spool drained")
        assert stored(usage.url) == (SENT, SENT * PROMPT_TOKENS, SENT * COMPLETION_TOKENS)
        # Each record was sent once by one worker: the delivered count is exact, not more.
        assert metric(metrics_url, "nexus_usage_records_delivered_total") == SENT
        assert writers  # the pids that spooled (both workers, when the kernel spread them)
    except BaseException:
        print(gateway.output()[-6000:])
        raise
    finally:
        gateway.stop()
        usage.stop()
