"""The pre-stop window and the end of the grace, for every kit service (issue #12, fault 4).

Before: on SIGTERM the listener closed 60-130 ms after ``/readyz`` turned 503 (a probe with a 1 s
period never saw the 503; clients got "connection refused"), and each request still running
at the end of the grace left a ``CancelledError`` traceback in the log.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import pytest

from nexus_testing import ServiceProcess, wait_until

pytestmark = pytest.mark.integration

SLOW = Path(__file__).parent / "slow_service"
CLEAN_EXIT = (0, -signal.SIGTERM)


def test_readiness_says_503_while_the_listener_still_serves() -> None:
    svc = ServiceProcess(SLOW, env={"SERVICE_NAME": "prestop", "PRESTOP_DELAY_S": "1.5",
                                    "ETCD_ENDPOINTS": ""}).start()  # fmt: skip
    try:
        assert httpx.get(f"{svc.url}/readyz").status_code == 200
        svc.signal(signal.SIGTERM)
        wait_until(lambda: httpx.get(f"{svc.url}/readyz").status_code == 503, 1.0, "readyz 503")
        # Inside the window: still accepting, still serving real work.
        assert httpx.get(f"{svc.url}/health").status_code == 200
        streamed = httpx.get(f"{svc.url}/v1/slow?chunks=1&delay=0", timeout=5)
        assert streamed.text.endswith("end\n")
        assert svc.wait(15) in CLEAN_EXIT
        assert "pre-stop window over" in svc.output()
    finally:
        svc.stop()


def test_requests_cut_at_the_end_of_the_grace_log_one_line_each_and_no_traceback() -> None:
    svc = ServiceProcess(SLOW, env={"SERVICE_NAME": "cut", "SHUTDOWN_GRACE_S": "0.5",
                                    "ETCD_ENDPOINTS": ""}).start()  # fmt: skip
    started = threading.Barrier(4)
    readers = [threading.Thread(target=_read_forever, args=(svc.url, started)) for _ in range(3)]
    try:
        for reader in readers:
            reader.start()
        started.wait(10)
        svc.signal(signal.SIGTERM)
        assert svc.wait(15) in CLEAN_EXIT
    finally:
        svc.stop()
        for reader in readers:
            reader.join(10)
    log = svc.output()
    assert "CancelledError" not in log
    assert "Traceback" not in log
    assert log.count("request cut: shutdown grace over") == 3


def _read_forever(url: str, started: threading.Barrier) -> None:
    try:
        with httpx.stream("GET", f"{url}/v1/slow?chunks=1000&delay=0.1", timeout=30) as resp:
            first = True
            for _ in resp.iter_bytes():
                if first:
                    started.wait(10)
                    first = False
    except httpx.HTTPError:
        pass  # the body is cut short: the point here is the server's log
