"""One trace across real processes: client -> gateway -> tts, exported over OTLP/HTTP.

The gateway and the tts service run as their own processes (``uvicorn app.main:app``), found
through a real etcd, with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a receiver this test
runs (``nexus_testing.otlp``: protobuf decoded with ``opentelemetry-proto``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nexus_testing import EtcdServer, ServiceProcess, wait_until
from nexus_testing.otlp import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.integration

SERVICES = Path(__file__).resolve().parents[2]
TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
SERVER, CLIENT = 2, 3  # the protobuf's SpanKind values


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as found:
        yield found


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer().start()
    yield server
    server.cleanup()


def traced_env(etcd: EtcdServer, receiver: OtlpReceiver, name: str) -> dict[str, str]:
    return {
        "SERVICE_NAME": name,
        "ETCD_ENDPOINTS": etcd.endpoint,
        "ETCD_LEASE_TTL_S": "5",
        "LOG_LEVEL": "INFO",  # the access lines carry the ids
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: spans leave within a moment, not 5 s
        "OTEL_SERVICE_NAME": "",
    }


def test_a_request_through_gateway_and_tts_is_one_trace(
    etcd: EtcdServer, receiver: OtlpReceiver
) -> None:
    tts_env = {**traced_env(etcd, receiver, "tts"), "TTS_BACKEND": "stub"}
    gw_env = {**traced_env(etcd, receiver, "gateway"), "NEXUS_AUTH_ENABLED": "false",
              "OLLAMA_BASE_URL": "", "GATEWAY_METRICS_PORT": "0"}  # fmt: skip
    tts = ServiceProcess(SERVICES / "tts", env=tts_env).start()
    gateway = ServiceProcess(SERVICES / "gateway", env=gw_env)
    try:
        gateway.start(wait="/readyz")
        body = {"model": "tts-1", "input": "Hello there.", "voice": "alloy",
                "response_format": "wav"}  # fmt: skip
        headers = {"traceparent": f"00-{TRACE}-{CLIENT_SPAN}-01", "x-request-id": "trace-e2e"}

        def routed() -> bool:
            resp = httpx.post(f"{gateway.url}/v1/audio/speech", json=body, headers=headers)
            return resp.status_code == 200 and resp.content[:4] == b"RIFF"

        wait_until(routed, 20, "speech through the gateway")

        def trace_complete() -> list[ReceivedSpan]:
            spans = [s for s in receiver.snapshot() if s.trace_id == TRACE]
            services = {(s.service, s.kind) for s in spans}
            done = {("gateway", SERVER), ("gateway", CLIENT), ("tts", SERVER)} <= services
            return spans if done and any(s.name == "tts.synthesize" for s in spans) else []

        spans = wait_until(trace_complete, 20, "the trace's spans at the receiver")
    finally:
        gateway.stop()
        tts.stop()
    last = [s for s in spans if s.attributes.get("nexus.request_id") == "trace-e2e"]
    gw_server = next(s for s in last if s.service == "gateway" and s.kind == SERVER)
    tts_server = next(s for s in last if s.service == "tts" and s.kind == SERVER)
    # The gateway continues the client's trace ...
    assert gw_server.parent_span_id == CLIENT_SPAN
    assert gw_server.name == "POST /v1/audio/speech"
    # ... its proxy span is the gateway server span's child ...
    gw_client = next(
        s for s in spans
        if s.service == "gateway" and s.kind == CLIENT and s.parent_span_id == gw_server.span_id
    )  # fmt: skip
    assert gw_client.attributes["nexus.service"] == "tts"
    assert gw_client.attributes["http.response.status_code"] == 200
    # ... and the tts process's server span is the proxy span's child: one trace, two processes.
    assert tts_server.parent_span_id == gw_client.span_id
    synth = next(s for s in spans if s.name == "tts.synthesize" and s.parent_span_id ==
                 tts_server.span_id)  # fmt: skip
    assert synth.attributes["nexus.tts.backend"] == "stub"
    assert synth.attributes["nexus.tts.outcome"] == "ok"
    assert "first_audio" in synth.events
    # Discovery's etcd read and metadata fetches are spans of their own (their own traces).
    names = {(s.service, s.name) for s in receiver.snapshot()}
    assert ("gateway", "etcd.get_prefix") in names
    assert ("gateway", "gateway.discovery.fetch_metadata") in names
    # And the trace id is beside the request id on the log lines of both processes.
    for proc in (gateway, tts):
        lines = [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]
        mine = [e for e in lines if e.get("request_id") == "trace-e2e"]
        assert mine, proc.output()[-2000:]
        assert {e.get("trace_id") for e in mine} == {TRACE}
