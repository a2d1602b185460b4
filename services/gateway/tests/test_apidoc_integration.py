"""The gateway's document with real services: a template copy comes and goes; schemathesis.

Real etcd, a real template process (``uvicorn app.main:app`` in ``services/template``) and the
gateway on a real uvicorn. Schemathesis generates requests from the gateway's own document
(bounded examples) and checks every answer against it: no 5xx, statuses, content types,
headers and bodies as documented.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import build_app
from nexus_testing import EtcdServer, ServiceProcess, UvicornThread, wait_for_http, wait_until
from tests.support import settings as gateway_settings
from tests.test_apidoc import BearerGuard

pytestmark = pytest.mark.integration

TEMPLATE = Path(__file__).resolve().parents[2] / "template"
AUTH = {"Authorization": "Bearer good"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]  # fmt: skip
MAX_EXAMPLES = 15


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def gw(etcd: EtcdServer) -> Iterator[UvicornThread]:
    config = gateway_settings(etcd_endpoints=etcd.endpoint, etcd_lease_ttl_s=2)
    with UvicornThread(build_app(config, guard=BearerGuard())) as server:
        wait_for_http(f"{server.url}/readyz", timeout_s=15)
        yield server


def start_template(etcd: EtcdServer, name: str) -> ServiceProcess:
    env = {"SERVICE_NAME": name, "ETCD_ENDPOINTS": etcd.endpoint, "ETCD_LEASE_TTL_S": "2",
           "LOG_LEVEL": "WARNING"}  # fmt: skip
    return ServiceProcess(TEMPLATE, env=env).start()


def document(gw: UvicornThread) -> dict[str, Any]:
    resp = httpx.get(f"{gw.url}/openapi.json", timeout=10)
    assert resp.status_code == 200, resp.text
    doc: dict[str, Any] = resp.json()
    return doc


def test_a_started_copy_appears_and_a_stopped_one_disappears(
    etcd: EtcdServer, gw: UvicornThread
) -> None:
    name = f"docs-{uuid.uuid4().hex[:6]}"
    alias = f"/services/{name}/v1/echo"
    assert alias not in document(gw)["paths"]
    copy = start_template(etcd, name)
    try:
        wait_until(lambda: alias in document(gw)["paths"], 10, "the copy in /openapi.json")
        doc = document(gw)
        validate(doc)
        op = doc["paths"][alias]["post"]
        assert op["tags"] == [name]
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"]  # EchoRequest, from its doc
        assert op["security"] == [{"bearerAuth": []}]
    finally:
        copy.stop()  # deregisters on the way out
    wait_until(lambda: alias not in document(gw)["paths"], 10, "the copy gone from /openapi.json")


def test_schemathesis_finds_no_5xx_and_no_answer_off_the_document(
    etcd: EtcdServer, gw: UvicornThread
) -> None:
    template = start_template(etcd, "template")
    try:
        wait_until(lambda: "/v1/echo" in document(gw)["paths"], 10, "the template routed")
        schema = schemathesis.openapi.from_dict(document(gw))
        operations = []
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result  # every operation of the document loads
            operations.append(result.ok())
        tested = 0
        for operation in operations:
            if _endless(operation.definition.raw):
                continue  # a live feed never ends: nothing to validate a body against
            _check(operation, gw.url)
            tested += 1
        assert tested >= 8  # the gateway's own routes and the template's, direct and aliased
    finally:
        template.stop()


def _endless(raw: dict[str, Any]) -> bool:
    if (raw.get("x-nexus") or {}).get("streaming"):
        return True
    contents = [r.get("content") or {} for r in (raw.get("responses") or {}).values()]
    return any("text/event-stream" in c for c in contents)


def _check(operation: Any, base_url: str) -> None:
    strategy = operation.as_strategy(generation_mode=GenerationMode.POSITIVE)

    @given(case=strategy)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base_url, headers=AUTH, checks=CHECKS, timeout=10)

    run()
