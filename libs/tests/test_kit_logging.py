"""Log lines are JSON, carry the request id on every line of a request, and hide secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nexus_kit.logging import configure_logging, get_logger
from nexus_testing import ServiceProcess

TEMPLATE = Path(__file__).resolve().parents[2] / "services" / "template"


def test_secrets_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    get_logger("t").info("login", password="hunter2", api_key="nx-abc", user="bob")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    event = json.loads(line)
    assert event["password"] == "[redacted]"
    assert event["api_key"] == "[redacted]"
    assert event["user"] == "bob"
    assert "hunter2" not in line


@pytest.mark.integration
def test_request_log_line_has_request_id_and_fields() -> None:
    import httpx

    svc = ServiceProcess(TEMPLATE, env={"ETCD_ENDPOINTS": "", "SERVICE_NAME": "logcheck"}).start()
    try:
        httpx.post(f"{svc.url}/v1/echo", json={"message": "hi"}, headers={"X-Request-ID": "rid-7"})
    finally:
        svc.stop()
    events = [json.loads(line) for line in svc.output().splitlines() if line.startswith("{")]
    request_lines = [
        e for e in events if e.get("event") == "request" and e.get("path") == "/v1/echo"
    ]
    assert len(request_lines) == 1
    line = request_lines[0]
    assert line["request_id"] == "rid-7"
    assert line["method"] == "POST"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float)
    assert line["service"] == "logcheck"
