"""Usage accounting benchmarks (issue 13): what accounting and token quotas cost the gateway, and
how fast the usage service ingests.

    .venv/bin/python bench/usage.py [--duration 8] [--records 20000] [--batch 500]

1. The gateway (its image's command, 1 worker, pinned to CPU 0; auth on) in front of the mock
   upstream, twice: accounting off (``USAGE_ENABLED=false``, a key without token quotas), then
   accounting and token quotas on (the usage service running, a key with ``rate_limit_tpm`` and
   both budgets set high enough never to refuse). Non-streaming chat at c32 (wrk) and the paced
   streams' time to first event at c32 (``bench/ttfe.py``).
2. The usage service's ingest: ``--records`` records in batches of ``--batch`` posted one after
   another, into SQLite (a temp file) and into the machine's PostgreSQL (a database created for
   the run and dropped afterwards).

Figures are per core on a shared machine: the header gives the load before and after.
The table is printed and saved to ``bench/results/usage.md`` (git-ignored).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness
from bench.harness import LoadResult, Procs, ms
from bench.run import (
    ADMIN_KEY,
    GATEWAY_AUTH_URL_VAR,
    GATEWAY_DIR,
    INTERNAL_TOKEN,
    RESULTS_DIR,
    _clean_env,
    gateway_command,
    start_auth,
)

USAGE_DIR = harness.ROOT / "services" / "usage"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
BIG = 10**14  # quotas high enough never to refuse: their bookkeeping is what is measured


def start_usage(procs: Procs, database_url: str, name: str) -> str:
    port = harness.free_port()
    env = {**_clean_env(), "SERVICE_PORT": str(port), "ETCD_ENDPOINTS": "",
           "DATABASE_URL": database_url, "NEXUS_INTERNAL_TOKEN": INTERNAL_TOKEN,
           "LOG_LEVEL": "WARNING", "MAX_BATCH_RECORDS": "100000"}  # fmt: skip
    cmd = [harness.PYTHON, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
           "--port", str(port)]  # fmt: skip
    proc = procs.start(name, cmd, cpu=harness.LOAD_CPU, env=env, cwd=USAGE_DIR)
    url = f"http://127.0.0.1:{port}"
    harness.wait_http(url + "/readyz", proc, timeout_s=60)
    return url


def make_key(auth_url: str, **limits: int) -> str:
    resp = httpx.post(
        auth_url + "/v1/api-keys", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        json={"name": "bench-usage", "rate_limit_rpm": 1_000_000, **limits}, timeout=10,
    )  # fmt: skip
    resp.raise_for_status()
    return str(resp.json()["key"])


def start_gateway(procs: Procs, mock: str, auth: str, usage: str | None, tmp: Path) -> str:
    port = harness.free_port()
    env = {
        **_clean_env(), "SERVICE_PORT": str(port), "GATEWAY_METRICS_PORT": "0",
        "OLLAMA_BASE_URL": mock, "ETCD_ENDPOINTS": "", "PYTHONUNBUFFERED": "1",
        "NEXUS_AUTH_ENABLED": "true", GATEWAY_AUTH_URL_VAR: auth,
        "NEXUS_INTERNAL_TOKEN": INTERNAL_TOKEN, "USAGE_ENABLED": "false",
        "USAGE_SPOOL_DIR": str(tmp / f"spool-{port}"),
    }  # fmt: skip
    if usage is not None:
        env.update({"USAGE_ENABLED": "true", "USAGE_BASE_URL": usage})
    proc = procs.start(f"gateway-{port}", gateway_command(port, 1), cpu=harness.TARGET_CPU,
                       env=env, cwd=GATEWAY_DIR)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    harness.wait_http(url + "/readyz", proc, timeout_s=60)
    return url


def measure_gateway(url: str, key: str, duration_s: float) -> dict[str, LoadResult]:
    chat = {"model": "bench", "messages": [{"role": "user", "content": "hi"}]}
    check = httpx.post(url + "/v1/chat/completions", json=chat, timeout=20,
                       headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    check.raise_for_status()
    harness.run_wrk(url, "chat.lua", 32, 2, key=key)  # warm-up
    return {
        "chat c32": harness.run_wrk(url, "chat.lua", 32, duration_s, key=key),
        "TTFE c32": harness.run_ttfe(url, 32, duration_s, key=key),
    }


def record(n: int, now: int) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "request_id": f"bench-{n}", "created_at": now - n % 3600,
            "key_id": f"key_bench_{n % 50}", "subject": f"usr_bench_{n % 10}",
            "endpoint": "/v1/chat/completions", "kind": "completions", "model": f"m{n % 5}",
            "service": "ollama", "instance": "ollama-1", "status": 200, "outcome": "ok",
            "input_tokens": 100 + n % 50, "output_tokens": 20 + n % 30, "duration_ms": 120,
            "ttft_ms": 40, "streamed": n % 2 == 0}  # fmt: skip


def measure_ingest(url: str, records: int, batch: int) -> float:
    now = int(time.time())
    batches = [[record(i, now) for i in range(start, min(start + batch, records))]
               for start in range(0, records, batch)]  # fmt: skip
    headers = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        client.post("/v1/usage/records", json={"records": batches[0][:1]}).raise_for_status()
        started = time.perf_counter()
        for body in batches:
            resp = client.post("/v1/usage/records", json={"records": body})
            resp.raise_for_status()
        elapsed = time.perf_counter() - started
    return records / elapsed


def pg_database(name: str, create: bool) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if create:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    opts = parser.parse_args(argv)
    lines = [*harness.load_header()]
    rows: dict[str, dict[str, LoadResult]] = {}
    ingest: dict[str, float] = {}
    pg_name = f"usage13_bench_{secrets.token_hex(4)}"
    tmp = Path(tempfile.mkdtemp(prefix="nexus-bench-usage-"))
    with Procs() as procs:
        with harness.step("mock, auth, usage"):
            mock, _ = harness.start_mock(procs)
            auth, _ = start_auth(procs, tmp)
            usage = start_usage(procs, f"sqlite+aiosqlite:///{tmp / 'usage.db'}", "usage")
        plain_key = make_key(auth)
        quota_key = make_key(auth, rate_limit_tpm=BIG, token_budget_daily=BIG,
                             token_budget_monthly=BIG)  # fmt: skip
        for label, usage_url, key in (("accounting off", None, plain_key),
                                      ("accounting + quotas on", usage, quota_key)):  # fmt: skip
            with harness.step(f"gateway, {label}"):
                gw = start_gateway(procs, mock, auth, usage_url, tmp)
                rows[label] = measure_gateway(gw, key, opts.duration)
                procs.stop(next(p for p in procs.procs if p.name.startswith("gateway")))
        with harness.step(f"ingest {opts.records} records into SQLite"):
            ingest["SQLite"] = measure_ingest(usage, opts.records, opts.batch)
        try:
            with harness.step(f"ingest {opts.records} records into PostgreSQL"):
                pg_database(pg_name, create=True)
                pg_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{pg_name}"
                ingest["PostgreSQL"] = measure_ingest(
                    start_usage(procs, pg_url, "usage-pg"), opts.records, opts.batch
                )
        finally:
            for proc in [p for p in procs.procs if p.name == "usage-pg"]:
                procs.stop(proc)
            pg_database(pg_name, create=False)
    lines.append(harness.load_header()[-1].replace("load at start", "load at end"))
    lines += render(rows, ingest, opts)
    text = "\n".join(lines)
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "usage.md").write_text(text + "\n")
    return 0


def render(rows: dict[str, dict[str, LoadResult]], ingest: dict[str, float],
           opts: argparse.Namespace) -> list[str]:  # fmt: skip
    out = ["", "| gateway (1 core, auth on) | chat c32 req/s | p50 | p99 | errors |"
           " TTFE c32 p50 | TTFE p99 |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for label, r in rows.items():
        chat, ttfe = r["chat c32"], r["TTFE c32"]
        errors = chat.errors + ttfe.errors
        out.append(f"| {label} | {chat.rps:,.0f} | {ms(chat.p50_ms)} | {ms(chat.p99_ms)} | "
                   f"{errors} | {ms(ttfe.p50_ms)} | {ms(ttfe.p99_ms)} |")  # fmt: skip
    if len(rows) == 2:
        off, on = rows.values()
        ratio = on["chat c32"].rps / off["chat c32"].rps if off["chat c32"].rps else 0.0
        delta = on["TTFE c32"].p50_ms - off["TTFE c32"].p50_ms
        out += ["", f"accounting on / off, chat c32: {ratio:.1%} (target ≥ 90%); "
                    f"TTFE p50 added: {delta:+.2f} ms (target ≤ 0.5 ms)"]  # fmt: skip
    out += ["", f"| usage ingest (batches of {opts.batch}, one sender) | records/s |", "|---|---:|"]
    out += [f"| {db} | {rate:,.0f} |" for db, rate in ingest.items()]
    return out


if __name__ == "__main__":
    raise SystemExit(main())
