"""Side-by-side benchmark: direct to the mock upstream, through the Nexus gateway, through LiteLLM.

Everything runs on loopback: the mock upstream (``bench/mock_upstream.py``) and the load
generators (wrk with ``bench/lua/*.lua``; ``bench/ttfe.py`` for time to first event) on CPU 1,
the measured server (gateway or LiteLLM's proxy) alone on CPU 0, so its figures are per core.
Every wrk run has a fixed duration, every child a timeout, and every process started here is
stopped on the way out (own process groups, try/finally, SIGTERM handled).

    make bench                                  # = .venv/bin/python bench/run.py
    .venv/bin/python bench/run.py --quick --targets direct
    .venv/bin/python bench/run.py --targets direct,gateway --auth off --json out.json

The table is printed and saved to ``bench/results/latest.md`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness, litellm_venv
from bench.harness import LoadResult, Procs, ms

TARGETS = ("direct", "gateway", "litellm")
GATEWAY_DIR = harness.ROOT / "services" / "gateway"
AUTH_DIR = harness.ROOT / "services" / "auth"
RESULTS_DIR = harness.BENCH_DIR / "results"
MODELS = ["bench", "paced"]

# --- Auth for the gateway (issue 4). Switched on by --auth on (or auto: when the gateway's
# .env.example documents NEXUS_AUTH_ENABLED). The auth service runs on the load CPU, since it
# is only asked on a cache miss; the gateway checks the bench key against it.
ADMIN_KEY = "nx-bench-admin-0123456789abcdefghij"
INTERNAL_TOKEN = "nexus-bench-internal-token-0123456789"
# The gateway variable naming the auth service (a static backend too: DESIGN's <NAME>_BASE_URL).
GATEWAY_AUTH_URL_VAR = "AUTH_BASE_URL"


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "wrk" or "ttfe"
    connections: int
    script: str = ""
    api: str = "chat"  # ttfe: chat (/v1/chat/completions) or responses (/v1/responses)


SCENARIOS = (
    Scenario("chat c1", "wrk", 1, "chat.lua"),
    Scenario("chat c32", "wrk", 32, "chat.lua"),
    Scenario("chat c128", "wrk", 128, "chat.lua"),
    Scenario("stream20 c32", "wrk", 32, "stream.lua"),
    Scenario("paced TTFE c32", "ttfe", 32),
    Scenario("responses TTFE c32", "ttfe", 32, api="responses"),
)
TTFE = "paced TTFE c32"


@dataclass
class Target:
    name: str
    url: str
    key: str | None = None
    note: str = ""


@dataclass
class Run:
    header: list[str]
    results: dict[str, dict[str, LoadResult]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # target -> why it was not measured
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- targets


def _clean_env() -> dict[str, str]:
    """The caller's env minus what would add backends or registration to the gateway."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_BASE_URL") and k not in {"ETCD_ENDPOINTS", "VIRTUAL_ENV"}
    }


def auth_wanted(mode: str) -> bool:
    if mode != "auto":
        return mode == "on"
    example = GATEWAY_DIR / ".env.example"
    return example.is_file() and "NEXUS_AUTH_ENABLED" in example.read_text()


def start_auth(procs: Procs, tmp: Path) -> tuple[str, str]:
    """Start the auth service with a bootstrap admin key; return (its URL, a fresh API key)."""
    if not (AUTH_DIR / "app" / "main.py").is_file():
        raise RuntimeError("services/auth/app/main.py is missing")
    port = harness.free_port()
    env = {
        **_clean_env(),
        "SERVICE_PORT": str(port),
        "ETCD_ENDPOINTS": "",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'auth.db'}",
        "JWT_SIGNING_KEY_FILE": str(tmp / "jwt-signing-key.pem"),
        "NEXUS_ADMIN_API_KEY": ADMIN_KEY,
        "NEXUS_INTERNAL_TOKEN": INTERNAL_TOKEN,
    }
    cmd = [harness.PYTHON, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
           "--port", str(port)]  # fmt: skip
    proc = procs.start("auth", cmd, cpu=harness.LOAD_CPU, env=env, cwd=AUTH_DIR)
    url = f"http://127.0.0.1:{port}"
    harness.wait_http(url + "/readyz", proc, timeout_s=60)
    resp = httpx.post(
        url + "/v1/api-keys", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        json={"name": "bench", "rate_limit_rpm": 1_000_000}, timeout=10,
    )  # fmt: skip
    if resp.status_code != 201:
        raise RuntimeError(f"auth: creating the bench key gave {resp.status_code}: {resp.text}")
    return url, str(resp.json()["key"])


def start_gateway(procs: Procs, mock_url: str, opts: argparse.Namespace, tmp: Path) -> Target:
    if not (GATEWAY_DIR / "app" / "main.py").is_file():
        raise RuntimeError("not built yet (services/gateway/app/main.py is missing)")
    port = harness.free_port()
    env = {
        **_clean_env(),
        "SERVICE_PORT": str(port),
        "GATEWAY_METRICS_PORT": str(harness.free_port()),
        "OLLAMA_BASE_URL": mock_url,
        "ETCD_ENDPOINTS": opts.etcd_endpoints,
        "NEXUS_AUTH_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    }
    key: str | None = None
    note = "auth off"
    if auth_wanted(opts.auth):
        auth_url, key = start_auth(procs, tmp)
        env.update(
            {
                "NEXUS_AUTH_ENABLED": "true",
                GATEWAY_AUTH_URL_VAR: auth_url,
                "NEXUS_ADMIN_API_KEY": ADMIN_KEY,
                "NEXUS_INTERNAL_TOKEN": INTERNAL_TOKEN,
            }
        )
        note = "auth on (API key checked with the auth service, cached)"
    cmd = gateway_command(port, opts.gateway_workers)
    note += f", {opts.gateway_workers} worker{'s' if opts.gateway_workers > 1 else ''}"
    proc = procs.start("gateway", cmd, cpu=harness.TARGET_CPU, env=env, cwd=GATEWAY_DIR)
    url = f"http://127.0.0.1:{port}"
    harness.wait_http(url + "/readyz", proc, timeout_s=60)
    if key is not None:
        note = _auth_enforced(url, note)
    return Target("gateway", url, key, note)


def gateway_command(port: int, workers: int) -> list[str]:
    """The gateway as its image runs it: the image's CMD (``python -m app.workers``, whose
    workers run uvicorn on asyncio's loop), on loopback, a given port and worker count."""
    args = image_command(GATEWAY_DIR)
    if args[:3] != ["python", "-m", "app.workers"]:  # an image of uvicorn app.main:app
        return [harness.PYTHON, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
                "--port", str(port), *image_options(GATEWAY_DIR)]  # fmt: skip
    return [harness.PYTHON, "-m", "app.workers", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers)]  # fmt: skip


def image_command(service_dir: Path) -> list[str]:
    dockerfile = service_dir / "Dockerfile"
    lines = dockerfile.read_text().splitlines() if dockerfile.is_file() else []
    cmd_lines = [ln for ln in lines if ln.startswith("CMD ")]
    return list(json.loads(cmd_lines[-1].removeprefix("CMD "))) if cmd_lines else []


def image_options(service_dir: Path) -> list[str]:
    """The uvicorn options of the service's image CMD (``--loop asyncio``...), host and port aside:
    the gateway is measured as its container runs it."""
    dockerfile = service_dir / "Dockerfile"
    if not dockerfile.is_file():
        return []
    cmd_lines = [ln for ln in dockerfile.read_text().splitlines() if ln.startswith("CMD ")]
    if not cmd_lines:
        return []
    args: list[str] = json.loads(cmd_lines[-1].removeprefix("CMD "))
    rest = args[args.index("app.main:app") + 1 :] if "app.main:app" in args else []
    kept: list[str] = []
    skip = False
    for arg in rest:
        if skip:
            skip = False
        elif arg in ("--host", "--port"):
            skip = True
        else:
            kept.append(arg)
    return kept


def _auth_enforced(url: str, note: str) -> str:
    """Say so in the report when the gateway lets a request without a key through."""
    body = {"model": "bench", "messages": [{"role": "user", "content": "hi"}]}
    status = httpx.post(url + "/v1/chat/completions", json=body, timeout=10).status_code
    if status == 401:
        return note
    return f"auth requested but NOT enforced by the gateway (no key -> {status}): effectively off"


def start_litellm(procs: Procs, mock_url: str, tmp: Path) -> Target:
    version = litellm_venv.installed_version()
    if version is None:
        raise litellm_venv.LiteLLMUnavailable("its venv is not installed (setup step failed)")
    config = litellm_venv.write_config(tmp / "litellm.yaml", mock_url, MODELS)
    port = harness.free_port()
    proc = procs.start(
        "litellm", litellm_venv.proxy_command(config, port), cpu=harness.TARGET_CPU,
        env=litellm_venv.proxy_env(),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    harness.wait_http(url + "/health/liveliness", proc, timeout_s=180)
    return Target("litellm", url, litellm_venv.MASTER_KEY, f"litellm[proxy]=={version}, 1 worker")


def check_answers(target: Target, timeout_s: float = 20.0) -> None:
    """A non-streaming and a streaming completion must both come back right before loading.

    Retried for a while: a gateway may be ready before its Ollama model list is in."""
    headers = {"Authorization": f"Bearer {target.key}"} if target.key else {}
    url = target.url + "/v1/chat/completions"
    body: dict[str, object] = {"model": "bench", "messages": [{"role": "user", "content": "hi"}]}
    deadline = time.monotonic() + timeout_s
    problem = ""
    while time.monotonic() < deadline:
        try:
            plain = httpx.post(url, json=body, headers=headers, timeout=10)
            streamed = httpx.post(url, json={**body, "stream": True}, headers=headers, timeout=10)
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if plain.status_code != 200 or "choices" not in plain.text:
                problem = f"non-streaming: {plain.status_code} {plain.text[:300]}"
            elif streamed.status_code != 200 or "data: [DONE]" not in streamed.text:
                problem = f"streaming: {streamed.status_code} {streamed.text[:300]}"
            else:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{target.name} does not answer chat completions right: {problem}")


# ---------------------------------------------------------------- measuring


def measure(target: Target, opts: argparse.Namespace, deadline: float) -> dict[str, LoadResult]:
    check_answers(target)
    harness.run_wrk(target.url, "chat.lua", 32, opts.warmup, key=target.key)
    rows: dict[str, LoadResult] = {}
    for sc in SCENARIOS:
        if time.monotonic() > deadline:
            print(f"   {sc.name}: skipped (time budget spent)", flush=True)
            continue
        if sc.kind == "wrk":
            rows[sc.name] = harness.run_wrk(
                target.url, sc.script, sc.connections, opts.duration, key=target.key
            )
        else:
            rows[sc.name] = harness.run_ttfe(
                target.url, sc.connections, opts.duration, key=target.key, api=sc.api
            )
        r = rows[sc.name]
        print(
            f"   {sc.name:<15} {r.rps:>9,.0f}/s  p50 {r.p50_ms:8.2f} ms  p99 {r.p99_ms:8.2f} ms"
            f"  errors {r.errors}{' (' + r.detail + ')' if r.detail else ''}",
            flush=True,
        )
    return rows


def run_all(opts: argparse.Namespace, run: Run) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="nexus-bench-"))
    deadline = time.monotonic() + opts.budget
    with Procs(tmp / "logs") as procs:
        with harness.step("mock upstream on CPU 1"):
            mock_url, _ = harness.start_mock(procs)
        for name in opts.targets:
            target: Target | None = None
            try:
                with harness.step(f"{name}: start"):
                    if name == "direct":
                        target = Target("direct", mock_url, None, "the mock itself")
                    elif name == "gateway":
                        target = start_gateway(procs, mock_url, opts, tmp)
                    else:
                        target = start_litellm(procs, mock_url, tmp)
                with harness.step(f"{name}: measure ({target.note})"):
                    run.results[name] = measure(target, opts, deadline)
                run.notes.append(f"{name}: {target.note}")
            except (RuntimeError, TimeoutError, ValueError) as exc:
                run.missing[name] = str(exc).splitlines()[0][:300]
                print(f"   {name} not measured: {exc}", flush=True)
            finally:
                # Stop the target (and auth) before the next one starts on the same core.
                for proc in [p for p in procs.procs if p.name != "mock"]:
                    procs.stop(proc)
        print(f"   (logs of this run: {procs.log_dir})")


# ---------------------------------------------------------------- report


def _ratio(value: float, base: float | None) -> str:
    if base is None or base <= 0:
        return "—"
    ratio = value / base
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def render(run: Run) -> str:
    out = [*(f"- {line}" for line in run.header), ""]
    out += [
        "| scenario | target | req/s | p50 ms | p99 ms | errors | vs direct | vs LiteLLM |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for sc in SCENARIOS:
        direct = run.results.get("direct", {}).get(sc.name)
        litellm = run.results.get("litellm", {}).get(sc.name)
        for target in TARGETS:
            r = run.results.get(target, {}).get(sc.name)
            if r is None:
                continue
            ttfe = sc.kind == "ttfe"
            vs_direct = "—" if ttfe else _ratio(r.rps, direct.rps if direct else None)
            vs_litellm = "—" if ttfe or target == "litellm" else _ratio(
                r.rps, litellm.rps if litellm else None
            )  # fmt: skip
            out.append(
                f"| {sc.name} | {target} | {r.rps:,.0f} | {ms(r.p50_ms)} | {ms(r.p99_ms)} "
                f"| {r.errors} | {vs_direct} | {vs_litellm} |"
            )
    out += ["", "TTFE rows: req/s is streams/s (paced: 20 events 10 ms apart), p50/p99 are the "
            "time to the first `data:` event.", ""]  # fmt: skip
    out += _added(run)
    out += _targets(run)
    for name, why in run.missing.items():
        out.append(f"- **{name} not measured**: {why}")
    return "\n".join(out) + "\n"


def _added(run: Run) -> list[str]:
    direct = run.results.get("direct", {})
    lines = []
    for target in ("gateway", "litellm"):
        rows = run.results.get(target, {})
        parts = []
        if "chat c1" in rows and "chat c1" in direct:
            added = rows["chat c1"].p50_ms - direct["chat c1"].p50_ms
            parts.append(f"added p50 at c1 {added:+.2f} ms")
        if TTFE in rows and TTFE in direct:
            parts.append(
                f"added TTFE p50 {rows[TTFE].p50_ms - direct[TTFE].p50_ms:+.2f} ms, "
                f"p99 {rows[TTFE].p99_ms - direct[TTFE].p99_ms:+.2f} ms (32 paced streams)"
            )
        if parts:
            lines.append(f"- **{target}**: " + "; ".join(parts))
    return [*lines, ""] if lines else []


def _targets(run: Run) -> list[str]:
    """Issue 7's targets for the gateway, each with the measured value."""
    gw, direct = run.results.get("gateway", {}), run.results.get("direct", {})
    litellm = run.results.get("litellm", {})
    if not gw:
        return []
    checks: list[tuple[str, str, bool]] = []
    if "chat c32" in gw:
        rps = gw["chat c32"].rps
        checks.append(("≥ 2,000 req/s per gateway core at c32", f"{rps:,.0f}", rps >= 2000))
        if "chat c32" in litellm and litellm["chat c32"].rps > 0:
            ratio = rps / litellm["chat c32"].rps
            checks.append(("≈ 20x LiteLLM at c32", f"{ratio:.1f}x", ratio >= 20))
    if "chat c1" in gw and "chat c1" in direct:
        added = gw["chat c1"].p50_ms - direct["chat c1"].p50_ms
        checks.append(("≤ 1 ms added p50 at c1", f"{added:+.2f} ms", added <= 1.0))
    if "chat c128" in gw:
        r = gw["chat c128"]
        checks.append(
            ("no errors, p99 ≤ 150 ms at c128", f"{r.errors} errors, p99 {r.p99_ms:.1f} ms",
             r.errors == 0 and r.p99_ms <= 150)
        )  # fmt: skip
    if TTFE in gw and TTFE in direct:
        added = gw[TTFE].p50_ms - direct[TTFE].p50_ms
        checks.append(("≤ 3 ms added TTFE (p50) at 32 paced streams", f"{added:+.2f} ms",
                       added <= 3.0 and gw[TTFE].errors == 0))  # fmt: skip
    lines = ["Gateway against issue 7's targets:", "", "| target | measured | met |",
             "|---|---:|:---:|"]  # fmt: skip
    lines += [f"| {what} | {value} | {'yes' if ok else 'NO'} |" for what, value, ok in checks]
    return [*lines, ""]


# ---------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s runs: a smoke test, not figures")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset")
    parser.add_argument("--duration", type=float, help="seconds per run (default 8; quick 2)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--auth", choices=("auto", "on", "off"), default="auto",
        help="gateway auth (auto: on when services/gateway/.env.example has NEXUS_AUTH_ENABLED)",
    )  # fmt: skip
    parser.add_argument("--gateway-workers", type=int, default=1, help="GATEWAY_WORKERS")
    parser.add_argument(
        "--etcd-endpoints", default="", help="ETCD_ENDPOINTS for the gateway (default: none)"
    )
    parser.add_argument(
        "--budget", type=float, default=540.0,
        help="seconds for all measuring; later scenarios are skipped past it (LiteLLM's "
        "one-off install is not counted)",
    )  # fmt: skip
    opts = parser.parse_args(argv)
    opts.targets = [t.strip() for t in opts.targets.split(",") if t.strip()]
    unknown = set(opts.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    opts.duration = opts.duration or (2.0 if opts.quick else 8.0)
    opts.warmup = 1.0 if opts.quick else 2.0
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.monotonic()
    run = Run(header=harness.load_header())
    if "litellm" in opts.targets:
        with harness.step(f"LiteLLM venv (litellm[proxy]=={litellm_venv.LITELLM_VERSION})"):
            try:
                litellm_venv.ensure_venv()
            except litellm_venv.LiteLLMUnavailable as exc:
                run.missing["litellm"] = f"cannot be installed here: {exc}"
                opts.targets.remove("litellm")
                print(f"   LiteLLM missing: {exc}", flush=True)
    print("\n".join(run.header), flush=True)
    run_all(opts, run)
    run.header.append(
        f"wrk 1 thread, {opts.duration:.0f} s per run after a {opts.warmup:.0f} s warm-up; "
        f"{'QUICK smoke run, not figures' if opts.quick else 'full run'}; "
        f"total {time.monotonic() - started:.0f} s"
    )
    run.header += [f"{note}" for note in run.notes]
    run.header.append(f"load at end: {harness.load_header()[2].removeprefix('load at start: ')}")
    table = render(run)
    print("\n" + table)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "latest.md").write_text(table)
    if opts.json:
        opts.json.write_text(
            json.dumps(
                {
                    "header": run.header,
                    "results": {
                        t: {s: r.as_dict() for s, r in rows.items()}
                        for t, rows in run.results.items()
                    },
                    "missing": run.missing,
                },
                indent=2,
            )
        )
    # A target that could not be measured is reported above, not an error: only none is.
    return 0 if run.results else 1


if __name__ == "__main__":
    sys.exit(main())
