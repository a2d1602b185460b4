"""Readiness checks: named async probes, critical or not, run concurrently with a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str | None = None


Probe = Callable[[], Awaitable[CheckResult | bool]]


@dataclass(frozen=True)
class Check:
    """A readiness probe. A failing critical check makes ``/readyz`` answer 503."""

    name: str
    probe: Probe
    critical: bool = True
    timeout_s: float = 2.0


async def _run(check: Check) -> CheckResult:
    try:
        result = await asyncio.wait_for(check.probe(), timeout=check.timeout_s)
    except TimeoutError:
        return CheckResult(False, f"timed out after {check.timeout_s:g}s")
    except Exception as exc:
        return CheckResult(False, f"{type(exc).__name__}: {exc}")
    return result if isinstance(result, CheckResult) else CheckResult(bool(result))


async def run_checks(checks: Sequence[Check]) -> tuple[bool, dict[str, Any]]:
    """Run every check; ready unless a critical one failed."""
    results = await asyncio.gather(*(_run(c) for c in checks))
    ready = True
    report: dict[str, Any] = {}
    for check, result in zip(checks, results, strict=True):
        status = "ok" if result.ok else "fail"
        entry: dict[str, Any] = {"status": status, "critical": check.critical}
        if result.detail:
            entry["detail"] = result.detail
        report[check.name] = entry
        ready = ready and (result.ok or not check.critical)
    return ready, report
