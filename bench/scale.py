"""Issue 14's rows: many connections, N workers on N cores, thousands of open streams.

Run by ``make bench`` after ``bench/run.py``; alone:

    .venv/bin/python bench/scale.py [--quick] [--streams 10000] [--workers-max 2]

Every gateway here is started as its image runs it (``python -m app.workers``, asyncio loop),
with auth on (a real auth service and API key), the mock as its upstream, all on loopback:

- **c256 / c1024**: non-streaming chat over keep-alive connections, one worker pinned to one
  core (wrk on the load core, 10 s wrk timeout);
- **N workers**: the same at c64 and c32 for N = 1..``--workers-max``, the workers pinned to
  N cores; throughput ratio to one worker, and c32 per worker core. The load generator and
  mock need cores too: with fewer than N + 1 cores they share the workers' (said in the row);
- **open streams**: ``bench/streams.py`` holds ``--streams`` paced streams (an event a second)
  through one pinned worker: errors, the worker's RSS growth per stream, TTFE p50/p99 of new
  streams while they are open, the worker's and the mock's CPU while they are held (% of one
  core, µs per relayed event). The gateway and the client get the hard file limit; the worker
  needs two descriptors per stream, so the count is capped by it (the header says by how much).

The header carries a machine yardstick: the mock upstream's own req/s at c32 (wrk on the load
core, as ``bench/run.py``'s ``direct`` target), to compare figures across machines. Under the
c256/c1024 rows, the closed-loop bound: with c connections always waiting, the mean latency is
c / throughput (Little's law), so a p99 target needs at least c / target req/s on that core.

Every process started here is stopped on the way out (``harness.Procs``); the table is printed
and saved to ``bench/results/scale.md``; the load average is noted beside every row.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness, run
from bench import streams as streams_mod
from bench.harness import LoadResult, Procs

# Each open stream holds two descriptors in the gateway (client + upstream): the run is capped
# by the hard RLIMIT_NOFILE this bench may use (raising a hard limit needs CAP_SYS_RESOURCE),
# less what the worker holds idle (bench/streams.py measures it and caps the count).
_HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
NOFILE = 1_048_576 if _HARD == resource.RLIM_INFINITY else _HARD
YARDSTICK_S = 4.0  # the mock alone at c32: how fast this machine is
# issue 14's p99 targets by connection count (ms)
P99_TARGET_MS = {256: 100.0, 1024: 250.0}


@dataclass
class Row:
    scenario: str
    result: LoadResult | None
    load: str
    note: str = ""


def load_now() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def cpu_plan(workers: int) -> tuple[str, str, str]:
    """(worker cpus, load cpus, note): workers on the first N cores, load on the rest."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= workers + 1:
        work, rest = cpus[:workers], cpus[workers:]
        return ",".join(map(str, work)), ",".join(map(str, rest)), ""
    everything = ",".join(map(str, cpus))
    note = f"only {len(cpus)} cores: load generator and mock share the workers' cores"
    return everything, everything, note


def start_gateway(procs: Procs, mock_url: str, auth_url: str, workers: int, cpus: str,
                  extra: dict[str, str] | None = None) -> tuple[str, harness.Proc]:  # fmt: skip
    port = harness.free_port()
    env = {
        **run._clean_env(),
        "SERVICE_PORT": str(port),
        "GATEWAY_METRICS_PORT": str(harness.free_port()),
        "OLLAMA_BASE_URL": mock_url,
        "ETCD_ENDPOINTS": "",
        "NEXUS_AUTH_ENABLED": "true",
        run.GATEWAY_AUTH_URL_VAR: auth_url,
        "NEXUS_INTERNAL_TOKEN": run.INTERNAL_TOKEN,
        "PYTHONUNBUFFERED": "1",
        **(extra or {}),
    }
    cmd = ["prlimit", f"--nofile={NOFILE}:{NOFILE}", *run.gateway_command(port, workers)]
    proc = procs.start(f"gateway-{workers}w", cmd, cpu=cpus, env=env, cwd=run.GATEWAY_DIR)
    url = f"http://127.0.0.1:{port}"
    harness.wait_http(url + "/readyz", proc, timeout_s=120)
    return url, proc


def wrk(url: str, key: str, connections: int, duration: float, load_cpus: str) -> LoadResult:
    saved = harness.LOAD_CPU
    harness.LOAD_CPU = load_cpus  # run_wrk pins wrk to the load cores
    try:
        return harness.run_wrk(url, "chat.lua", connections, duration, key=key)
    finally:
        harness.LOAD_CPU = saved


def worker_pid(supervisor: int) -> int:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return int(children[0])


def many_connections(procs: Procs, mock: str, auth: str, key: str, opts: argparse.Namespace,
                     rows: list[Row]) -> None:  # fmt: skip
    url, proc = start_gateway(procs, mock, auth, 1, harness.TARGET_CPU)
    run.check_answers(run.Target("gateway", url, key))
    wrk(url, key, 64, opts.warmup, harness.LOAD_CPU)
    for connections in (256, 1024):
        result = wrk(url, key, connections, opts.duration, harness.LOAD_CPU)
        rows.append(Row(f"chat c{connections}, 1 worker, 1 pinned core", result, load_now()))
        print(f"   {rows[-1].scenario}: {fmt(result)}", flush=True)
    procs.stop(proc)


def workers_scaling(procs: Procs, mock: str, auth: str, key: str, opts: argparse.Namespace,
                    rows: list[Row]) -> None:  # fmt: skip
    for n in range(1, opts.workers_max + 1):
        work, load, note = cpu_plan(n)
        url, proc = start_gateway(procs, mock, auth, n, work)
        run.check_answers(run.Target("gateway", url, key))
        wrk(url, key, 64, opts.warmup, load)
        for connections in (64, 32):
            result = wrk(url, key, connections, opts.duration, load)
            rows.append(Row(f"chat c{connections}, {n} worker(s) on cores {work}", result,
                            load_now(), note))  # fmt: skip
            print(f"   {rows[-1].scenario}: {fmt(result)}", flush=True)
        procs.stop(proc)


def open_streams(procs: Procs, mock: str, mock_pid: int, auth: str, key: str,
                 opts: argparse.Namespace) -> dict[str, object]:  # fmt: skip
    extra = {
        "UPSTREAM_MAX_CONNECTIONS": str(opts.streams + 1000),
        "GATEWAY_MAX_CLIENT_CONNECTIONS": str(opts.streams + 1000),
    }
    url, proc = start_gateway(procs, mock, auth, 1, harness.TARGET_CPU, extra)
    run.check_answers(run.Target("gateway", url, key))
    cmd = harness.pinned(
        ["prlimit", f"--nofile={NOFILE}:{NOFILE}", harness.PYTHON, "-m", "bench.streams", url,
         "--pid", str(worker_pid(proc.popen.pid)), "--mock-pid", str(mock_pid),
         "--streams", str(opts.streams), "--key", key, "--probes", "200"],
        harness.LOAD_CPU,
    )  # fmt: skip
    out = harness._run_bounded(cmd, dict(os.environ), 280)  # streams.py: 150 s + closing
    data = harness.parse_bench_json(out)
    procs.stop(proc)
    print(f"   open streams: {data}", flush=True)
    return data


def yardstick(mock: str) -> str:
    """The mock upstream's own c32 throughput: how fast this machine's load core is."""
    r = harness.run_wrk(mock, "chat.lua", 32, YARDSTICK_S)
    return (f"machine yardstick: the mock upstream alone {r.rps:,.0f} req/s at c32 (wrk "
            f"{YARDSTICK_S:.0f} s, both on CPU {harness.LOAD_CPU}, as run.py's direct "
            "target)")  # fmt: skip


def fd_cap(streams: dict[str, object]) -> str:
    """The header line saying how many streams the worker's descriptor limit allowed."""
    wanted, n = streams.get("streams_wanted"), streams.get("streams")
    capped = f"capped at {n} (of {wanted})" if n != wanted else f"{n}, not capped"
    return (f"open streams {capped}: the worker's RLIMIT_NOFILE is {streams.get('fd_limit')} "
            f"(the hard limit here is {NOFILE}; raising it needs CAP_SYS_RESOURCE), less its "
            f"{streams.get('fd_idle')} idle descriptors, 2 x {streams_mod.PROBES_AT_ONCE} for "
            f"the probes in flight and {streams_mod.FD_SPARE} spare, two per stream (client + "
            f"upstream); {streams.get('fd_open')} in use with them open")  # fmt: skip


def little(rows: list[Row]) -> list[str]:
    """Little's law under the c256/c1024 rows: closed loop, so mean latency = c / throughput."""
    lines = []
    for row in rows:
        r = row.result
        if r is None or not r.rps or "1 worker, 1 pinned core" not in row.scenario:
            continue
        c = int(row.scenario.split(",")[0].removeprefix("chat c"))
        target = P99_TARGET_MS.get(c)
        if target is None:
            continue
        mean = 1000 * c / r.rps
        need = 1000 * c / target
        verdict = (
            "the core is too slow for the target whatever the fairness"
            if r.rps < need
            else "the core is fast enough: the tail misses the target"
            if r.p99_ms > target
            else "within the target"
        )
        lines.append(
            f"- c{c} closed loop: mean latency = c / throughput = {c} / {r.rps:,.0f} = "
            f"{mean:,.0f} ms (wrk p50 {harness.ms(r.p50_ms)}, p99 {harness.ms(r.p99_ms)} = "
            f"{r.p99_ms / mean:.1f}x the mean); "
            f"p99 ≤ {target:.0f} ms needs mean ≤ {target:.0f} ms, so ≥ {need:,.0f} req/s on this "
            f"core (measured {100 * r.rps / need:.0f}% of it): {verdict}"
        )
    return lines


def fmt(r: LoadResult) -> str:
    return (f"{r.rps:,.0f}/s p50 {r.p50_ms:.1f} ms p99 {r.p99_ms:.1f} ms errors {r.errors}"
            f"{' (' + r.detail + ')' if r.detail else ''}")  # fmt: skip


def render(header: list[str], rows: list[Row], streams: dict[str, object] | None) -> str:
    out = [*(f"- {line}" for line in header), ""]
    out += ["| scenario | req/s | p50 ms | p99 ms | errors | load (1/5/15 min) | note |",
            "|---|---:|---:|---:|---:|---|---|"]  # fmt: skip
    for row in rows:
        r = row.result
        if r is None:
            out.append(f"| {row.scenario} | — | — | — | — | {row.load} | {row.note} |")
            continue
        out.append(f"| {row.scenario} | {r.rps:,.0f} | {harness.ms(r.p50_ms)} | "
                   f"{harness.ms(r.p99_ms)} | {r.errors}{' (' + r.detail + ')' if r.detail else ''}"
                   f" | {row.load} | {row.note} |")  # fmt: skip
    out += ["", *little(rows), *ratios(rows)]
    if streams:
        why = f" ({streams['first_error']})" if streams.get("first_error") else ""
        out += [
            "",
            f"Open streams through 1 worker on 1 pinned core: {streams.get('opened')} of "
            f"{streams.get('streams')} open (in {streams.get('open_s')} s), errors "
            f"{streams.get('errors')}{why}; "
            f"worker RSS {streams.get('rss_before_kib')} KiB -> {streams.get('rss_open_kib')} KiB "
            f"= **{streams.get('rss_per_stream_kib')} KiB per open stream**, "
            f"{streams.get('rss_later_kib')} KiB ten events later, "
            f"{streams.get('rss_after_close_kib')} KiB 2 s after closing them (descriptors "
            f"{streams.get('fd_open')} open, {streams.get('fd_after_close')} after); TTFE of "
            f"{streams.get('ttfe_probes')} new streams while they were open: p50 "
            f"{streams.get('ttfe_p50_ms')} ms, **p99 {streams.get('ttfe_p99_ms')} ms**; load "
            f"{streams.get('load')}.",
            "",
            f"CPU while they were held ({streams.get('hold_s')} s, "
            f"{streams.get('hold_events_per_s')} events/s relayed): gateway worker "
            f"**{streams.get('hold_gateway_cpu_pct')}% of one core = "
            f"{streams.get('hold_gateway_us_per_event')} µs per relayed event**, mock "
            f"{streams.get('hold_mock_cpu_pct')}%, stream holder "
            f"{streams.get('hold_client_cpu_pct')}%; cores busy {busy(streams, 'hold')}; "
            f"longest silence on all streams {streams.get('hold_max_gap_ms')} ms. While "
            f"probing ({streams.get('probing_s')} s): gateway "
            f"{streams.get('probing_gateway_cpu_pct')}%, mock "
            f"{streams.get('probing_mock_cpu_pct')}%, holder "
            f"{streams.get('probing_client_cpu_pct')}%, probe process "
            f"{streams.get('probe_client_cpu_pct')}%; cores busy {busy(streams, 'probing')}; "
            f"longest silence {streams.get('probing_max_gap_ms')} ms; slowest TTFEs "
            f"{streams.get('ttfe_slowest_ms')} ms.",
        ]  # fmt: skip
    return "\n".join(out) + "\n"


def busy(streams: dict[str, object], prefix: str) -> str:
    cores = streams.get(f"{prefix}_core_busy_pct")
    if not isinstance(cores, dict):
        return "?"
    return ", ".join(f"CPU {core} {value}%" for core, value in cores.items())


def ratios(rows: list[Row]) -> list[str]:
    by_n: dict[tuple[int, int], float] = {}
    for row in rows:
        if row.result is None or "worker(s)" not in row.scenario:
            continue
        connections = int(row.scenario.split(",")[0].removeprefix("chat c"))
        n = int(row.scenario.split(", ")[1].split()[0])
        by_n[(connections, n)] = row.result.rps
    lines = []
    for (connections, n), rps in sorted(by_n.items()):
        one = by_n.get((connections, 1))
        if n > 1 and one:
            lines.append(f"- c{connections}: {n} workers / 1 worker = {rps / one:.2f}x "
                         f"(target ≥ {0.9 * n:.1f}x)")  # fmt: skip
        if connections == 32:
            lines.append(f"- c32 with auth, {n} worker(s): {rps / n:,.0f} req/s per worker core "
                         "(target ≥ 2,800)")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, 500 streams")
    parser.add_argument("--streams", type=int, help="open streams (default 10000; quick 500)")
    parser.add_argument("--workers-max", type=int, default=2)
    parser.add_argument("--skip", default="", help="comma list of: connections,workers,streams")
    opts = parser.parse_args(argv)
    opts.duration = 3.0 if opts.quick else 8.0
    opts.warmup = 1.0 if opts.quick else 2.0
    opts.streams = opts.streams or (500 if opts.quick else 10_000)
    skip = {s.strip() for s in opts.skip.split(",") if s.strip()}
    header = harness.load_header()
    print("\n".join(header), flush=True)
    started = time.monotonic()
    rows: list[Row] = []
    streams: dict[str, object] | None = None
    tmp = Path(tempfile.mkdtemp(prefix="nexus-bench-scale-"))
    with Procs(tmp / "logs") as procs:
        with harness.step("mock upstream and auth on the load core"):
            mock, mock_proc = harness.start_mock(procs)
            auth, key = run.start_auth(procs, tmp)
        try:
            with harness.step(f"yardstick: the mock alone at c32 ({YARDSTICK_S:.0f} s)"):
                header.append(yardstick(mock))
                print(f"   {header[-1]}", flush=True)
            if "connections" not in skip:
                with harness.step("c256 / c1024 on one worker"):
                    many_connections(procs, mock, auth, key, opts, rows)
            if "workers" not in skip:
                with harness.step(f"1..{opts.workers_max} workers"):
                    workers_scaling(procs, mock, auth, key, opts, rows)
            if "streams" not in skip:
                with harness.step(f"{opts.streams} open streams on one worker"):
                    streams = open_streams(procs, mock, mock_proc.popen.pid, auth, key, opts)
                    streams["load"] = load_now()
                    header.append(fd_cap(streams))
        except (RuntimeError, TimeoutError, ValueError, subprocess.SubprocessError) as exc:
            print(f"   stopped early: {exc}", flush=True)
            header.append(f"stopped early: {str(exc).splitlines()[0][:200]}")
        print(f"   (logs of this run: {procs.log_dir})")
    header.append(f"total {time.monotonic() - started:.0f} s; load at end: {load_now()}")
    table = render(header, rows, streams)
    print("\n" + table)
    (harness.BENCH_DIR / "results").mkdir(exist_ok=True)
    (harness.BENCH_DIR / "results" / "scale.md").write_text(table)
    return 0 if rows or streams else 1


if __name__ == "__main__":
    sys.exit(main())
