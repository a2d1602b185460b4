"""Registration against a real etcd: key and value, lease expiry, clean shutdown, etcd restarts."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nexus_testing import EtcdServer, ServiceProcess, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "services" / "template"
SLOW = Path(__file__).parent / "slow_service"
PREFIX = "/nexus/services/"
TTL = 3
# uvicorn re-raises the SIGTERM it handled once shutdown is complete, so -15 is a clean exit.
CLEAN_EXIT = (0, -signal.SIGTERM)


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer().start()
    yield server
    server.cleanup()


def start(service_dir: Path, etcd: EtcdServer, **env: str) -> ServiceProcess:
    base = {"ETCD_ENDPOINTS": etcd.endpoint, "ETCD_LEASE_TTL_S": str(TTL), "LOG_LEVEL": "INFO"}
    return ServiceProcess(service_dir, env={**base, **env}).start()


def test_registers_key_and_value(etcd: EtcdServer) -> None:
    svc = start(TEMPLATE, etcd, SERVICE_NAME="echoer")
    try:
        keys = wait_until(lambda: etcd.get_prefix(PREFIX + "echoer/"), 5, "registration")
        (key, raw), = keys.items()
        value = json.loads(raw)
        meta = httpx.get(f"{svc.url}/v1/metadata").json()
        assert key == f"{PREFIX}echoer/{meta['service']['instance_id']}"
        assert value == {
            "name": "echoer", "instance_id": meta["service"]["instance_id"],
            "base_url": svc.url, "metadata_url": f"{svc.url}/v1/metadata",
            "version": "0.1.0", "kind": "nexus", "draining": False,
        }
        ready = httpx.get(f"{svc.url}/readyz").json()
        assert ready["checks"]["registry"]["status"] == "ok"
    finally:
        svc.stop()


def test_advertises_the_port_given_to_uvicorn(etcd: EtcdServer) -> None:
    import os
    import sys

    from nexus_testing import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "SERVICE_PORT"}
    svc = ServiceProcess(TEMPLATE, port=port, args=[
        sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)])
    svc.env = {**env, "ETCD_ENDPOINTS": etcd.endpoint, "SERVICE_NAME": "byhand"}
    svc.start()
    try:
        keys = wait_until(lambda: etcd.get_prefix(PREFIX + "byhand/"), 5, "registration")
        assert json.loads(next(iter(keys.values())))["base_url"] == f"http://127.0.0.1:{port}"
    finally:
        svc.stop()


def test_sigterm_deletes_key_at_once(etcd: EtcdServer) -> None:
    svc = start(TEMPLATE, etcd, SERVICE_NAME="clean")
    wait_until(lambda: etcd.get_prefix(PREFIX + "clean/"), 5, "registration")
    svc.signal(signal.SIGTERM)
    assert svc.wait(15) in CLEAN_EXIT
    # Deleted during shutdown, before exit: no wait for the lease.
    assert etcd.get_prefix(PREFIX + "clean/") == {}


def test_sigkill_key_expires_with_lease(etcd: EtcdServer) -> None:
    svc = start(TEMPLATE, etcd, SERVICE_NAME="killed")
    wait_until(lambda: etcd.get_prefix(PREFIX + "killed/"), 5, "registration")
    svc.signal(signal.SIGKILL)
    svc.wait(5)
    assert etcd.get_prefix(PREFIX + "killed/") != {}  # still there: only the lease can remove it
    wait_until(lambda: etcd.get_prefix(PREFIX + "killed/") == {}, TTL + 3, "lease expiry")


def test_survives_etcd_restart(etcd: EtcdServer) -> None:
    svc = start(TEMPLATE, etcd, SERVICE_NAME="sturdy")
    health_codes: list[int] = []
    stop = threading.Event()

    def poll_health() -> None:
        with httpx.Client(timeout=2) as client:
            while not stop.is_set():
                health_codes.append(client.get(f"{svc.url}/health").status_code)
                time.sleep(0.05)

    poller = threading.Thread(target=poll_health)
    poller.start()
    try:
        wait_until(lambda: etcd.get_prefix(PREFIX + "sturdy/"), 5, "registration")
        etcd.stop()
        time.sleep(TTL + 1)  # the lease expires while etcd is away (and on restart)
        ready = httpx.get(f"{svc.url}/readyz")
        assert ready.status_code == 200  # registry is not critical
        assert ready.json()["checks"]["registry"]["status"] == "fail"
        etcd.start()
        wait_until(lambda: etcd.get_prefix(PREFIX + "sturdy/"), 2 * TTL, "re-registration")
        # and it stays registered (the new lease is kept alive)
        time.sleep(TTL + 1)
        assert etcd.get_prefix(PREFIX + "sturdy/") != {}
    finally:
        stop.set()
        poller.join()
        svc.stop()
    assert health_codes
    assert set(health_codes) == {200}


def test_lost_lease_is_recreated(etcd: EtcdServer) -> None:
    svc = start(TEMPLATE, etcd, SERVICE_NAME="relet")
    try:
        keys = wait_until(lambda: etcd.get_prefix(PREFIX + "relet/"), 5, "registration")
        # Someone deletes the key and revokes every lease (as an operator or a compaction might).
        leases = httpx.post(f"{etcd.endpoint}/v3/lease/leases", json={}).json()["leases"]
        for lease in leases:
            httpx.post(f"{etcd.endpoint}/v3/lease/revoke", json={"ID": lease["ID"]})
        wait_until(lambda: etcd.get_prefix(PREFIX + "relet/") == {}, 3, "revocation")
        again = wait_until(lambda: etcd.get_prefix(PREFIX + "relet/"), 2 * TTL, "re-registration")
        assert set(again) == set(keys)
    finally:
        svc.stop()


def test_graceful_drain_finishes_inflight_stream(etcd: EtcdServer) -> None:
    svc = start(SLOW, etcd, SERVICE_NAME="slowpoke", SHUTDOWN_GRACE_S="10")
    key_prefix = PREFIX + "slowpoke/"
    wait_until(lambda: etcd.get_prefix(key_prefix), 5, "registration")
    received: list[bytes] = []
    first_chunk = threading.Event()

    def stream() -> None:
        with httpx.stream("GET", f"{svc.url}/v1/slow?chunks=8&delay=0.25", timeout=20) as resp:
            for chunk in resp.iter_bytes():
                received.append(chunk)
                first_chunk.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first_chunk.wait(10)
    svc.signal(signal.SIGTERM)
    marked = wait_until(
        lambda: [v for v in etcd.get_prefix(key_prefix).values() if json.loads(v)["draining"]],
        3, "draining flag",
    )
    assert marked
    reader.join(20)
    assert b"".join(received).endswith(b"end\n")  # the in-flight stream completed
    assert svc.wait(15) in CLEAN_EXIT
    assert etcd.get_prefix(key_prefix) == {}


def test_grace_period_bounds_shutdown(etcd: EtcdServer) -> None:
    svc = start(SLOW, etcd, SERVICE_NAME="stubborn", SHUTDOWN_GRACE_S="1")
    wait_until(lambda: etcd.get_prefix(PREFIX + "stubborn/"), 5, "registration")
    got_first = threading.Event()
    body: list[bytes] = []

    def stream() -> None:
        try:
            with httpx.stream("GET", f"{svc.url}/v1/slow?chunks=1000&delay=0.1", timeout=30) as r:
                for chunk in r.iter_bytes():
                    body.append(chunk)
                    got_first.set()
        except httpx.HTTPError:
            pass

    reader = threading.Thread(target=stream)
    reader.start()
    assert got_first.wait(10)
    svc.signal(signal.SIGTERM)
    # a 100 s stream did not hold the process past its grace period
    assert svc.wait(15) in CLEAN_EXIT
    reader.join(10)
    assert not b"".join(body).endswith(b"end\n")
    assert etcd.get_prefix(PREFIX + "stubborn/") == {}
