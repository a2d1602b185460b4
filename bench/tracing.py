"""The gateway's hot path with tracing off and on (100% sampling).

    .venv/bin/python bench/tracing.py            # CPU per request, off vs on (~1 min)
    .venv/bin/python bench/tracing.py --tables   # also bench/run.py twice (~3 min)
    .venv/bin/python bench/tracing.py --quick    # smoke run

The first measure is the gateway process's own CPU time (user + system, from /proc) per
proxied request during a fixed wrk run (chat, c32, auth off, no etcd, in front of the mock):
on a shared machine that moves far less with other people's load than req/s does, and it
counts the batch exporter's thread too. ``--tables`` adds the usual req/s and latency tables.

Tracing on means ``OTEL_EXPORTER_OTLP_ENDPOINT`` set (the gateway inherits the environment of
``bench/run.py``) and ``OTEL_TRACES_SAMPLER=always_on``, exporting to an OTLP/HTTP sink this
script runs on loopback (it decodes and counts, keeps nothing), on the load generator's CPU.
Both runs print their tables; the comparison is the gateway rows. The machine's load is in
each table's header: on a shared machine the figures are only as quiet as it was.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402
from nexus_testing.otlp import OtlpReceiver  # noqa: E402

GATEWAY_DIR = ROOT / "services" / "gateway"
TICKS = os.sysconf("SC_CLK_TCK")


class CountingSink(OtlpReceiver):
    """Counts spans instead of keeping them (a run exports hundreds of thousands)."""

    count = 0

    def _take(self, request: Any) -> None:
        spans = 0
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                spans += len(scope.spans)
        with self._lock:
            self.requests += 1
            self.count += spans


def run(extra_env: dict[str, str], args: list[str], timeout_s: float) -> int:
    env = {**os.environ, **extra_env}
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--targets", "direct,gateway",
           "--auth", "off", *args]  # fmt: skip
    return subprocess.run(cmd, env=env, timeout=timeout_s, check=False).returncode


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def cpu_per_request(tracing: dict[str, str], duration_s: float) -> tuple[float, float, int]:
    """(CPU ms per request, req/s, requests) of one gateway process for one wrk run."""
    with harness.Procs() as procs:
        mock_url, _ = harness.start_mock(procs)
        port = harness.free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(tracing)
        env.update({"SERVICE_PORT": str(port), "GATEWAY_METRICS_PORT": "0",
                    "OLLAMA_BASE_URL": mock_url, "ETCD_ENDPOINTS": "",
                    "NEXUS_AUTH_ENABLED": "false", "LOG_LEVEL": "WARNING"})  # fmt: skip
        cmd = [harness.PYTHON, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
               "--port", str(port), "--loop", "asyncio", "--no-access-log"]  # fmt: skip
        gateway = procs.start("gateway", cmd, cpu=harness.TARGET_CPU, env=env, cwd=GATEWAY_DIR)
        url = f"http://127.0.0.1:{port}"
        harness.wait_http(url + "/readyz", gateway, timeout_s=60)
        harness.run_wrk(url, "chat.lua", 8, 2.0)  # warm-up
        before = cpu_seconds(gateway.popen.pid)
        result = harness.run_wrk(url, "chat.lua", 32, duration_s)
        used = cpu_seconds(gateway.popen.pid) - before
    if result.errors:
        raise RuntimeError(f"errors during the run: {result.detail}")
    return used * 1000 / max(1, result.requests), result.rps, result.requests


def cpu_table(duration_s: float) -> None:
    print("\n".join(harness.load_header()), flush=True)
    if harness.pinning_available():  # the sink (a thread of this process) off the gateway's CPU
        os.sched_setaffinity(0, {int(harness.LOAD_CPU)})
    rows = []
    with CountingSink() as sink:
        on = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_TRACES_SAMPLER": "always_on"}
        for label, env in (("off", {}), ("on, 100% sampled", on), ("off (again)", {})):
            ms, rps, n = cpu_per_request(env, duration_s)
            rows.append(f"| tracing {label} | {ms:.3f} | {rps:,.0f} | {n:,} |")
        spans = sink.count
    print("| gateway, chat c32 | CPU ms / request | req/s | requests |")
    print("|---|---:|---:|---:|")
    print("\n".join(rows))
    print(f"spans received by the sink: {spans:,}")
    print("\n".join(harness.load_header()), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tables", action="store_true", help="also bench/run.py off and on")
    opts = parser.parse_args()
    cpu_table(2.0 if opts.quick else 8.0)
    if not opts.tables:
        return 0
    args = ["--quick"] if opts.quick else []
    print("== tracing off (OTEL_* unset)", flush=True)
    off_env = {k: "" for k in os.environ if k.startswith("OTEL_")}
    rc = run(off_env, args, 900)
    with CountingSink() as sink:
        print(f"== tracing on: 100% sampled, OTLP/HTTP to {sink.url}", flush=True)
        on_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_TRACES_SAMPLER": "always_on"}
        rc = run(on_env, args, 900) or rc
        print(f"== spans received by the sink: {sink.count} "
              f"in {sink.requests} exports", flush=True)  # fmt: skip
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
