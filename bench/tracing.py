"""The gateway's hot path with tracing off and on (100% sampling): ``bench/run.py`` twice.

    .venv/bin/python bench/tracing.py            # ~3 min: targets direct + gateway, auth off
    .venv/bin/python bench/tracing.py --quick    # smoke run

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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))

from nexus_testing.otlp import OtlpReceiver  # noqa: E402


class CountingSink(OtlpReceiver):
    """Counts spans instead of keeping them (a run exports hundreds of thousands)."""

    def _take(self, request: object) -> None:
        spans = sum(
            len(scope.spans)
            for resource in request.resource_spans  # type: ignore[attr-defined]
            for scope in resource.scope_spans
        )
        with self._lock:
            self.requests += 1
            self.count = getattr(self, "count", 0) + spans


def run(extra_env: dict[str, str], args: list[str], timeout_s: float) -> int:
    env = {**os.environ, **extra_env}
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--targets", "direct,gateway",
           "--auth", "off", *args]  # fmt: skip
    return subprocess.run(cmd, env=env, timeout=timeout_s, check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    args = ["--quick"] if opts.quick else []
    print("== tracing off (OTEL_* unset)", flush=True)
    off_env = {k: "" for k in os.environ if k.startswith("OTEL_")}
    rc = run(off_env, args, 900)
    with CountingSink() as sink:
        print(f"== tracing on: 100% sampled, OTLP/HTTP to {sink.url}", flush=True)
        on_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_TRACES_SAMPLER": "always_on"}
        rc = run(on_env, args, 900) or rc
        print(f"== spans received by the sink: {getattr(sink, 'count', 0)} "
              f"in {sink.requests} exports", flush=True)  # fmt: skip
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
