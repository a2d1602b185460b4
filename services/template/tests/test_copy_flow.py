"""Copying the template is all it takes: a copy registers and describes itself by its new name."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest

from nexus_kit.metadata import metadata_json_schema
from nexus_testing import EtcdServer, ServiceProcess, free_port

pytestmark = pytest.mark.integration
TEMPLATE = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer().start()
    yield server
    server.cleanup()


def wait_for_keys(etcd: EtcdServer, prefix: str, timeout_s: float = 5) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        keys = etcd.get_prefix(prefix)
        if keys:
            return keys
        time.sleep(0.05)
    raise AssertionError(f"nothing under {prefix}")


def copy_template(tmp_path: Path, name: str) -> Path:
    target = tmp_path / "services" / name
    shutil.copytree(TEMPLATE, target, ignore=shutil.ignore_patterns("__pycache__", ".env", "tests"))
    return target


def test_copied_template_registers_under_new_name(tmp_path: Path, etcd: EtcdServer) -> None:
    port = free_port()
    target = copy_template(tmp_path, "acme")
    # Configure it the documented way: a .env file in the service directory.
    (target / ".env").write_text(f"SERVICE_NAME=acme\nSERVICE_PORT={port}\n")
    svc = ServiceProcess(target, env={"ETCD_ENDPOINTS": etcd.endpoint}, port=port).start()
    try:
        keys = wait_for_keys(etcd, "/nexus/services/acme/")
        value = json.loads(next(iter(keys.values())))
        assert value["base_url"] == f"http://127.0.0.1:{port}"
        meta = httpx.get(f"{svc.url}/v1/metadata").json()
        jsonschema.Draft202012Validator(metadata_json_schema()).validate(meta)
        assert meta["service"]["name"] == "acme"
        assert next(iter(keys)).endswith("/" + meta["service"]["instance_id"])
        echo = httpx.post(f"{svc.url}/v1/echo", json={"message": "copied"}).json()
        assert echo == {"message": "copied", "service": "acme"}
    finally:
        svc.stop()


def test_python_dash_m_reads_service_port(tmp_path: Path, etcd: EtcdServer) -> None:
    port = free_port()
    target = copy_template(tmp_path, "beta")
    svc = ServiceProcess(
        target,
        env={"SERVICE_NAME": "beta", "SERVICE_PORT": str(port), "ETCD_ENDPOINTS": etcd.endpoint},
        port=port,
        args=[sys.executable, "-m", "app.main"],
    ).start()
    try:
        wait_for_keys(etcd, "/nexus/services/beta/")
    finally:
        svc.stop()


def test_bare_example_service_meets_the_contract(tmp_path: Path, etcd: EtcdServer) -> None:
    port = free_port()
    svc = ServiceProcess(
        TEMPLATE,
        env={"SERVICE_NAME": "bare", "SERVICE_PORT": str(port), "ETCD_ENDPOINTS": etcd.endpoint},
        port=port,
        args=[sys.executable, "example-service.py"],
    ).start()
    try:
        keys = wait_for_keys(etcd, "/nexus/services/bare/")
        meta = httpx.get(f"{svc.url}/v1/metadata").json()
        jsonschema.Draft202012Validator(metadata_json_schema()).validate(meta)
        assert next(iter(keys)).endswith("/" + meta["service"]["instance_id"])
        assert httpx.get(f"{svc.url}/readyz").status_code == 200
        bad = httpx.post(f"{svc.url}/v1/echo", json={"nope": 1})
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "message"
    finally:
        svc.stop()
    assert etcd.get_prefix("/nexus/services/bare/") == {}
