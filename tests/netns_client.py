"""HTTP from inside a network namespace, for tests/test_multihost.py (run under ``ip netns exec``).

``get URL`` prints ``{"status": ..., "body": ...}``; ``load URL SECONDS RATE`` posts an echo at
about RATE per second for SECONDS (bounded: at most SECONDS * RATE requests) and prints
``{"sent": n, "failures": [...], "by": {service: count}}``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import httpx


def get(url: str) -> dict[str, Any]:
    try:
        resp = httpx.get(url, timeout=5)
    except httpx.HTTPError as exc:
        return {"status": 0, "body": type(exc).__name__}
    try:
        body: Any = resp.json()
    except ValueError:
        body = resp.text[:200]
    return {"status": resp.status_code, "body": body}


def load(url: str, seconds: float, rate: float) -> dict[str, Any]:
    sent, failures, by = 0, [], {}  # type: ignore[var-annotated]
    interval = 1 / rate
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline and sent < seconds * rate:
            began = time.monotonic()
            sent += 1
            try:
                resp = client.post(url, json={"message": "multihost"})
                if resp.status_code == 200:
                    name = resp.json().get("service", "?")
                    by[name] = by.get(name, 0) + 1
                else:
                    failures.append(f"{resp.status_code} {resp.text[:100]}")
            except httpx.HTTPError as exc:
                failures.append(type(exc).__name__)
            time.sleep(max(0.0, interval - (time.monotonic() - began)))
    return {"sent": sent, "failures": failures, "by": by}


def main() -> None:
    command, url, *rest = sys.argv[1:]
    result = get(url) if command == "get" else load(url, float(rest[0]), float(rest[1]))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
