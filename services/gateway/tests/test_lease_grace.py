"""Lease expiry vs deregistration, and a frozen etcd (issue #12, fault 1; grace.py, ADR 0008).

Unit tier: discovery over the in-memory etcd with a probe the test scripts. Integration tier: a
real etcd frozen with SIGSTOP for longer than the lease TTL under load, then resumed: it expires
every lease at once; before the grace the gateway dropped the instance and requests got 404/503.
"""

from __future__ import annotations

import base64
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from app.discovery import Discovery, Instance
from app.main import build_app
from nexus_kit import CheckResult, ServiceMetadata
from nexus_testing import EtcdServer, ServiceProcess, UvicornThread, wait_for_http, wait_until
from tests.support import FakeEtcd, eventually, metadata, registration, settings

PREFIX = "/nexus/services/"
KEY = PREFIX + "acme/acme-1"


class Probes:
    def __init__(self) -> None:
        self.ok = True
        self.calls = 0

    async def __call__(self, instance: Instance) -> CheckResult:
        self.calls += 1
        return CheckResult(self.ok, None if self.ok else "readyz 503")


@asynccontextmanager
async def running(store: FakeEtcd, probes: Probes, **overrides: float) -> AsyncIterator[Discovery]:
    config = settings(etcd_endpoints="http://etcd.test:2379", discovery_grace_probe_s=0.02,
                      etcd_heartbeat_s=0, **overrides)  # fmt: skip

    async def fetch(instance: Instance) -> ServiceMetadata:
        return metadata(instance.service)

    d = Discovery(config, source_factory=store.source, fetch=fetch, on_change=lambda _: None,
                  probe=probes)  # fmt: skip
    d.start()
    try:
        await eventually(lambda: _ready(d))
        yield d
    finally:
        await d.stop()


def _ready(d: Discovery) -> bool:
    return any(i.key == KEY and i.metadata is not None for i in d.snapshot().instances)


def _entry(d: Discovery) -> Instance | None:
    return next((i for i in d.snapshot().instances if i.key == KEY), None)


async def test_an_expired_lease_of_a_healthy_instance_keeps_it_until_re_registration() -> None:
    store, probes = FakeEtcd(), Probes()
    store.put(KEY, registration("acme", "http://a1"), lease=7)
    async with running(store, probes) as d:
        store.delete(KEY)  # what etcd does when the lease expires
        await eventually(lambda: probes.calls >= 3, what="probes during the grace")
        entry = _entry(d)
        assert entry is not None
        assert entry.expired_at is not None
        store.put(KEY, registration("acme", "http://a1"), lease=8)  # the registrar is back
        await eventually(lambda: (e := _entry(d)) is not None and e.expired_at is None)
        calls = probes.calls
        probes.ok = False  # the grace is over: probes no longer decide anything
        assert _entry(d) is not None
        assert probes.calls <= calls + 1


async def test_a_failing_probe_or_the_deadline_removes_an_expired_instance() -> None:
    store, probes = FakeEtcd(), Probes()
    store.put(KEY, registration("acme", "http://a1"), lease=7)
    async with running(store, probes) as d:
        probes.ok = False
        store.delete(KEY)
        await eventually(lambda: _entry(d) is None, what="the dead instance to go")
    probes = Probes()
    store.put(KEY, registration("acme", "http://a1"), lease=9)
    async with running(store, probes, discovery_lease_grace_s=0.2) as d:
        store.delete(KEY)
        await eventually(lambda: _entry(d) is None, what="the grace deadline")
        assert probes.calls >= 1


async def test_a_clean_deregistration_and_a_lease_less_key_leave_at_once() -> None:
    store, probes = FakeEtcd(), Probes()
    store.put(KEY, registration("acme", "http://a1"), lease=7)
    async with running(store, probes) as d:
        store.put(KEY, registration("acme", "http://a1", draining=True), lease=7)
        await eventually(lambda: (e := _entry(d)) is not None and e.draining)
        store.delete(KEY)
        await eventually(lambda: _entry(d) is None)
        assert probes.calls == 0
        store.put(KEY, registration("acme", "http://a1"))  # manual: no lease
        await eventually(lambda: _entry(d) is not None)
        store.delete(KEY)
        await eventually(lambda: _entry(d) is None)
        assert probes.calls == 0


# -- a real etcd, frozen ----------------------------------------------------------------

TEMPLATE = Path(__file__).resolve().parents[2] / "template"
TTL_S = 2


class Load:
    """Requests in a loop from a thread (bounded in count and time), failures recorded."""

    def __init__(self, url: str, max_requests: int = 5_000, max_s: float = 60.0) -> None:
        self.url, self.max_requests, self.max_s = url, max_requests, max_s
        self.sent = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set() and self.sent < self.max_requests:
                if time.monotonic() > deadline:
                    break
                self.sent += 1
                try:
                    resp = client.post(self.url, json={"message": "x"})
                    if resp.status_code != 200:
                        self.failures.append(f"{resp.status_code} {resp.text[:120]}")
                except httpx.HTTPError as exc:
                    self.failures.append(type(exc).__name__)
                time.sleep(0.01)


@pytest.fixture
def frozen_stack() -> Iterator[tuple[EtcdServer, ServiceProcess, UvicornThread]]:
    etcd = EtcdServer().start()
    started: list[ServiceProcess | UvicornThread] = []
    try:
        env = {"SERVICE_NAME": "template", "ETCD_ENDPOINTS": etcd.endpoint,
               "ETCD_LEASE_TTL_S": str(TTL_S), "LOG_LEVEL": "WARNING", "PRESTOP_DELAY_S": "0"}
        service = ServiceProcess(TEMPLATE, env=env).start()  # fmt: skip
        started.append(service)
        config = settings(etcd_endpoints=etcd.endpoint, etcd_heartbeat_s=0.5,
                          etcd_reconnect_max_s=0.5, discovery_grace_probe_s=0.5)  # fmt: skip
        gw = UvicornThread(build_app(config)).start()
        started.append(gw)
        wait_for_http(f"{gw.url}/readyz", timeout_s=15)
        yield etcd, service, gw
    finally:
        if etcd.proc is not None and etcd.proc.poll() is None:
            os.kill(etcd.proc.pid, signal.SIGCONT)  # never leave it stopped
        for item in reversed(started):
            item.stop()
        etcd.cleanup()


def _etcd_view(gw: UvicornThread) -> dict[str, object]:
    doc: dict[str, object] = httpx.get(f"{gw.url}/v1/services", timeout=5).json()["etcd"]
    return doc


def _readyz_etcd(gw: UvicornThread) -> tuple[int, dict[str, object]]:
    resp = httpx.get(f"{gw.url}/readyz", timeout=5)
    check: dict[str, object] = resp.json()["checks"]["etcd"]
    return resp.status_code, check


@pytest.mark.integration
def test_a_frozen_etcd_is_visible_and_its_lease_flush_loses_no_request(
    frozen_stack: tuple[EtcdServer, ServiceProcess, UvicornThread],
) -> None:
    etcd, _, gw = frozen_stack
    url = f"{gw.url}/v1/echo"
    wait_until(lambda: httpx.post(url, json={"message": "x"}).status_code == 200, 15, "routed")
    assert etcd.proc is not None
    with Load(url) as load:
        os.kill(etcd.proc.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: _etcd_view(gw)["connected"] is False, 10, "the freeze to show")
            view = _etcd_view(gw)
            assert "did not answer" in str(view["error"])
            assert view["last_ok"]  # when it last answered: how stale the table is
            status, check = _readyz_etcd(gw)
            assert status == 200  # not critical: the last table keeps serving
            assert check["status"] == "fail"
            time.sleep(TTL_S * 2.5)  # longer than the TTL: every lease is past its expiry
        finally:
            os.kill(etcd.proc.pid, signal.SIGCONT)
        wait_until(lambda: _etcd_view(gw)["connected"] is True, 15, "etcd to answer again")
        wait_until(lambda: _readyz_etcd(gw)[1]["status"] == "ok", 15, "readyz etcd ok")
        # What a resumed etcd does to a lease whose keep-alives it missed (whether this run's
        # lease got there first is a race; the revoke makes the flush certain): the key goes
        # while the instance is healthy, and its registrar puts it back on its next keep-alive.
        before = _lease_of(etcd, TEMPLATE_PREFIX)
        _revoke(etcd, before)
        wait_until(lambda: _lease_of(etcd, TEMPLATE_PREFIX) not in (0, before), 15,
                   "the registrar to re-register")  # fmt: skip
        time.sleep(0.5)
    assert load.sent > 50
    assert load.failures == []


TEMPLATE_PREFIX = PREFIX + "template/"


def _lease_of(etcd: EtcdServer, prefix: str) -> int:
    key = base64.b64encode(prefix.encode()).decode()
    end = base64.b64encode(prefix[:-1].encode() + b"0").decode()  # "/" + 1
    body = {"key": key, "range_end": end}
    kvs = httpx.post(f"{etcd.endpoint}/v3/kv/range", json=body, timeout=5).json().get("kvs", [])
    return int(kvs[0].get("lease", 0)) if kvs else 0


def _revoke(etcd: EtcdServer, lease: int) -> None:
    resp = httpx.post(f"{etcd.endpoint}/v3/lease/revoke", json={"ID": lease}, timeout=5)
    resp.raise_for_status()


def test_services_view_shows_an_instance_kept_under_the_lease_grace() -> None:
    from app.routes import _instance_doc
    from app.upstreams import Upstreams
    from tests.support import instance

    kept = _instance_doc(instance("acme", lease=7, expired_at=1_700_000_000.0), Upstreams(3, 10))
    assert kept["lease_expired_at"] == "2023-11-14T22:13:20+00:00"
    assert _instance_doc(instance("acme", lease=7), Upstreams(3, 10))["lease_expired_at"] is None
