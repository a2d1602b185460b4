"""Usage accounting end to end: a real gateway (uvicorn), a fake LLM (uvicorn) and the real
usage service as a process (SQLite), found through its metadata like any other service.

Counts, not timing: records equal requests after a SIGKILL of the usage service under load, and
after a gateway restart while the usage service was away (the disk spool delivers them).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.main import build_app
from nexus_testing import ServiceProcess, UvicornThread, free_port, wait_for_http, wait_until
from tests.support import settings
from tests.usage_fakes import COMPLETION_TOKENS, PROMPT_TOKENS, fake_llm

pytestmark = pytest.mark.integration
USAGE_DIR = Path(__file__).resolve().parents[2] / "usage"
INTERNAL = secrets.token_urlsafe(24)
ADMIN_VIEW = {"x-nexus-subject": "usr_test", "x-nexus-role": "admin"}
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}


def usage_process(db: Path, port: int) -> ServiceProcess:
    env = {"ETCD_ENDPOINTS": "", "DATABASE_URL": f"sqlite+aiosqlite:///{db}",
           "NEXUS_INTERNAL_TOKEN": INTERNAL, "LOG_LEVEL": "WARNING"}  # fmt: skip
    return ServiceProcess(USAGE_DIR, env=env, port=port)


@pytest.fixture
def llm() -> Iterator[UvicornThread]:
    with UvicornThread(fake_llm()) as upstream:
        yield upstream


@contextmanager
def running_gateway(llm_url: str, usage_url: str, spool: Path, **extra: Any) -> Iterator[str]:
    config = settings(
        static_backends={"llm": llm_url, "usage": usage_url}, nexus_internal_token=INTERNAL,
        usage_spool_dir=str(spool), usage_flush_interval_s=0.05, usage_retry_max_s=0.5,
        usage_batch_size=10, **extra,
    )  # fmt: skip
    with UvicornThread(build_app(config)) as gw:
        wait_for_http(f"{gw.url}/readyz", timeout_s=15)
        yield gw.url


def stored(usage_url: str, kind: str = "completions") -> dict[str, int]:
    resp = httpx.get(
        f"{usage_url}/v1/organization/usage/{kind}",
        params={"start_time": _today() - 86_400, "bucket_width": "1d", "limit": 2},
        headers=ADMIN_VIEW, timeout=10,
    )  # fmt: skip
    resp.raise_for_status()
    results = [r for b in resp.json()["data"] for r in b["results"]]
    return {
        "requests": sum(r["num_model_requests"] for r in results),
        "input": sum(r["input_tokens"] for r in results),
        "output": sum(r.get("output_tokens", 0) for r in results),
    }


def _today() -> int:
    return int(time.time()) // 86_400 * 86_400


async def test_usage_read_from_plain_and_streamed_responses(
    llm: UvicornThread, tmp_path: Path
) -> None:
    usage = usage_process(tmp_path / "usage.db", free_port()).start(wait="/readyz")
    try:
        with running_gateway(llm.url, usage.url, tmp_path / "spool") as gw:
            async with httpx.AsyncClient(base_url=gw, timeout=10) as client:
                for _ in range(2):
                    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
                plain_stream = await client.post(
                    "/v1/chat/completions", json={**CHAT, "stream": True}
                )
                asked = await client.post(
                    "/v1/chat/completions",
                    json={**CHAT, "stream": True, "stream_options": {"include_usage": True}},
                )
                emb = await client.post("/v1/embeddings", json={"model": "m1", "input": "x"})
            assert emb.status_code == 200
            # Not asked: the chunk the gateway asked for is gone; asked: it is there.
            assert b'"choices":[]' not in plain_stream.content
            assert plain_stream.content.endswith(b"data: [DONE]\n\n")
            assert b'"choices":[]' in asked.content
            wait_until(lambda: stored(usage.url)["requests"] == 4, 15, "4 chat records")
            assert stored(usage.url) == {"requests": 4, "input": 4 * PROMPT_TOKENS,
                                         "output": 4 * COMPLETION_TOKENS}  # fmt: skip
            wait_until(lambda: stored(usage.url, "embeddings")["requests"] == 1, 15, "embedding")
            assert stored(usage.url, "embeddings")["input"] == 5
    finally:
        usage.stop()


async def test_sigkill_of_usage_under_load_fails_nothing_and_loses_nothing(
    llm: UvicornThread, tmp_path: Path
) -> None:
    port = free_port()
    usage = usage_process(tmp_path / "usage.db", port).start(wait="/readyz")
    sent = 0
    try:
        with running_gateway(llm.url, usage.url, tmp_path / "spool") as gw:
            async with httpx.AsyncClient(base_url=gw, timeout=30) as client:

                async def one(i: int) -> int:
                    body = {**CHAT, "stream": i % 2 == 0}
                    return (await client.post("/v1/chat/completions", json=body)).status_code

                for wave in range(6):  # bounded load: 6 waves of 10 concurrent requests
                    if wave == 2:
                        usage.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
                        usage.wait(10)
                    statuses = await asyncio.gather(*(one(i) for i in range(10)))
                    sent += len(statuses)
                    assert statuses == [200] * 10  # no client request fails
                usage = usage_process(tmp_path / "usage.db", port).start(wait="/readyz")
                wait_until(lambda: stored(usage.url)["requests"] >= sent, 30, "all records")
            assert stored(usage.url) == {"requests": sent, "input": sent * PROMPT_TOKENS,
                                         "output": sent * COMPLETION_TOKENS}  # fmt: skip
    finally:
        usage.stop()


def test_a_gateway_restart_while_usage_is_away_loses_nothing(
    llm: UvicornThread, tmp_path: Path
) -> None:
    port = free_port()
    spool = tmp_path / "spool"
    usage = usage_process(tmp_path / "usage.db", port)  # not started: away
    try:
        with running_gateway(llm.url, f"http://127.0.0.1:{port}", spool) as gw:
            with httpx.Client(base_url=gw, timeout=10) as client:
                for _ in range(7):
                    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        # the gateway stopped (its lifespan ended, maybe after the thread join gave up waiting
        # on a loaded machine): what it held is on disk
        wait_until(lambda: _spooled(spool) == 7, 20, "7 spooled records")
        usage.start(wait="/readyz")
        with running_gateway(llm.url, usage.url, spool):
            wait_until(lambda: stored(usage.url)["requests"] == 7, 20, "spooled records")
        assert not list(spool.glob("*.json"))
    finally:
        usage.stop()


def test_a_client_hang_up_is_recorded_with_its_outcome(llm: UvicornThread, tmp_path: Path) -> None:
    usage = usage_process(tmp_path / "usage.db", free_port()).start(wait="/readyz")
    try:
        with running_gateway(llm.url, usage.url, tmp_path / "spool") as gw:
            body = {**CHAT, "model": "slow", "stream": True}
            with httpx.stream("POST", f"{gw}/v1/chat/completions", json=body, timeout=10) as r:
                first = next(r.iter_lines())  # one event, then hang up
            assert first.startswith("data: ")
            wait_until(lambda: stored(usage.url)["requests"] == 1, 20, "the cut stream's record")
            metrics = httpx.get(f"{gw}/metrics", timeout=5).text
        row = _rows(tmp_path / "usage.db")[0]
        assert row["outcome"] == "client_gone"
        assert row["streamed"] == 1
        assert row["ttft_ms"] is not None
        assert row["input_tokens"] is None  # the usage chunk never came: unknown, not 0
        assert row["model"] == "slow"
        assert 'nexus_gen_ai_requests_total{gen_ai_request_model="slow",outcome="client_gone"}' in (
            metrics
        )
        assert "nexus_usage_records_delivered_total 1.0" in metrics
    finally:
        usage.stop()


def _spooled(spool: Path) -> int:
    return sum(len(orjson.loads(p.read_bytes())) for p in spool.glob("*.json"))


def _rows(db: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM usage_records")]
