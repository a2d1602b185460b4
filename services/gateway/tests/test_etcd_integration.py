"""With a real etcd and real services on loopback: register, route, kill, outage, restart."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.etcd import AetcdSource, Compacted
from app.main import build_app
from nexus_testing import EtcdServer, ServiceProcess, UvicornThread, wait_for_http
from tests.support import settings, wait_until

pytestmark = pytest.mark.integration

TEMPLATE = Path(__file__).resolve().parents[2] / "template"
PREFIX = "/nexus/services/"
TTL_S = 2
ROUTED_WITHIN_S = 1.0  # "register -> routed within 1 s"


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def gw(etcd: EtcdServer) -> Iterator[UvicornThread]:
    config = settings(
        etcd_endpoints=etcd.endpoint,
        etcd_lease_ttl_s=TTL_S,
        etcd_reconnect_max_s=0.5,
        discovery_retry_max_s=0.5,
    )
    with UvicornThread(build_app(config)) as server:
        wait_for_http(f"{server.url}/readyz", timeout_s=15)
        yield server


def start_service(directory: Path, etcd: EtcdServer, name: str) -> ServiceProcess:
    env = {"SERVICE_NAME": name, "ETCD_ENDPOINTS": etcd.endpoint, "ETCD_LEASE_TTL_S": str(TTL_S),
           "NEXUS_ETCD_PREFIX": PREFIX, "LOG_LEVEL": "WARNING"}  # fmt: skip
    return ServiceProcess(directory, env=env).start()


@pytest.fixture(scope="module")
def template(etcd: EtcdServer) -> Iterator[ServiceProcess]:
    service = start_service(TEMPLATE, etcd, "template")
    yield service
    service.stop()


def echo(gw: UvicornThread, path: str = "/v1/echo") -> httpx.Response:
    return httpx.post(f"{gw.url}{path}", json={"message": "hi"}, timeout=5)


def echoed_by(gw: UvicornThread, path: str) -> str | None:
    resp = echo(gw, path)
    return resp.json()["service"] if resp.status_code == 200 else None


def registered(etcd: EtcdServer, name: str) -> dict[str, str]:
    return etcd.get_prefix(f"{PREFIX}{name}/")


def test_a_copied_template_is_routed_at_once_and_gone_after_a_kill(
    tmp_path: Path, etcd: EtcdServer, gw: UvicornThread
) -> None:
    copy = tmp_path / "services" / "acme"
    shutil.copytree(TEMPLATE, copy, ignore=shutil.ignore_patterns("tests", ".env", "__pycache__",
                                                                  ".mypy_cache"))  # fmt: skip
    acme = start_service(copy, etcd, "acme")
    try:
        wait_until(lambda: registered(etcd, "acme"), 10, "acme to register in etcd")
        wait_until(lambda: echoed_by(gw, "/services/acme/v1/echo") == "acme", ROUTED_WITHIN_S,
                   "the gateway to route the new service")  # fmt: skip
        services = httpx.get(f"{gw.url}/v1/services").json()["data"]
        (instance,) = next(s for s in services if s["name"] == "acme")["instances"]
        assert (instance["source"], instance["state"]) == ("etcd", "ready")
        assert instance["lease"]
        acme.signal(signal.SIGKILL)  # no deregistration: only the lease can remove it
        acme.wait()
        # The lease runs out at most TTL after the last keep-alive; etcd's expiry sweep (0.5 s)
        # and a busy machine get the rest of the bound.
        # After the expiry its probe fails (the lease grace keeps only live instances), so it
        # goes; the path it served answers 503 for ROUTE_GONE_S, not 404 (issue #12).
        wait_until(lambda: "acme" not in service_names(gw), TTL_S + 3,
                   "the dead instance to leave with its lease")  # fmt: skip
        gone = echo(gw, "/services/acme/v1/echo")
        assert gone.status_code == 503
        assert gone.json()["error"]["code"] == "service_unavailable"
    finally:
        acme.stop()


def test_routing_survives_an_etcd_outage_and_catches_up_after_it(
    etcd: EtcdServer, gw: UvicornThread, template: ServiceProcess
) -> None:
    wait_until(lambda: echoed_by(gw, "/v1/echo") == "template", 10, "the template to be routed")
    etcd.stop()
    try:
        for _ in range(3):
            assert echoed_by(gw, "/v1/echo") == "template"
        assert httpx.get(f"{gw.url}/readyz").status_code == 200
    finally:
        etcd.start()
    # A manual, lease-less registration under the single-level key form, made after restart.
    etcd.put(f"{PREFIX}manual", orjson.dumps({"name": "manual", "base_url": template.url}).decode())
    wait_until(lambda: echoed_by(gw, "/services/manual/v1/echo") == "template", 15,
               "the change made after the restart")  # fmt: skip
    assert echoed_by(gw, "/v1/echo") == "template"
    etcd.delete(f"{PREFIX}manual")
    wait_until(lambda: "manual" not in service_names(gw), 10, "removal")
    assert echo(gw, "/services/manual/v1/echo").status_code == 503  # served a moment ago


def service_names(gw: UvicornThread) -> list[str]:
    return [s["name"] for s in httpx.get(f"{gw.url}/v1/services").json()["data"]]


def test_a_draining_instance_gets_nothing_new(
    etcd: EtcdServer, gw: UvicornThread, template: ServiceProcess
) -> None:
    key = f"{PREFIX}drainy/d-1"
    value: dict[str, Any] = {"name": "drainy", "base_url": template.url}
    etcd.put(key, orjson.dumps(value).decode())
    wait_until(lambda: echoed_by(gw, "/services/drainy/v1/echo"), 10, "drainy to be routed")
    etcd.put(key, orjson.dumps({**value, "draining": True}).decode())
    wait_until(lambda: echo(gw, "/services/drainy/v1/echo").status_code == 503, 10, "draining")
    assert echo(gw, "/services/drainy/v1/echo").headers["retry-after"]
    etcd.delete(key)


async def test_the_aetcd_source_reads_watches_and_reports_compaction(etcd: EtcdServer) -> None:
    prefix = "/nexus-source-test/"
    etcd.put(f"{prefix}a", "1")
    source = AetcdSource(etcd.endpoint)
    try:
        revision, kvs = await source.read(prefix)
        assert [(kv.key, kv.value) for kv in kvs] == [(f"{prefix}a", b"1")]
        assert await source.current_revision(prefix) == revision
        etcd.put(f"{prefix}b", "2")
        etcd.delete(f"{prefix}a")
        changes = source.watch(prefix, revision + 1)
        first, second = await anext(changes), await anext(changes)
        assert (first.kind, first.kv.key, first.kv.mod_revision) == (
            "put",
            f"{prefix}b",
            revision + 1,
        )
        assert (second.kind, second.kv.key) == ("delete", f"{prefix}a")
        await changes.aclose()
        compact(etcd, revision + 2)
        with pytest.raises(Compacted):
            await anext(source.watch(prefix, revision))
    finally:
        await source.close()


def compact(etcd: EtcdServer, revision: int) -> None:
    body = {"revision": str(revision), "physical": True}
    httpx.post(f"{etcd.endpoint}/v3/kv/compaction", json=body, timeout=5).raise_for_status()
