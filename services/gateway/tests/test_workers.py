"""N gateway workers behind one port (``python -m app.workers``), as a user runs them: a real
supervisor process, two workers, the real auth service; no timing asserts, counts only.

- one port, one limit: ``limit + k`` requests, each on a new connection (so the kernel spreads
  them over the workers), get exactly ``k`` refusals, and both workers served some;
- one metrics view: the supervisor's metrics port sums the workers' counters;
- a worker killed with SIGKILL is replaced; SIGTERM stops the supervisor and every worker
  (the last test: the module's supervisor is gone after it).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nexus_testing import ServiceProcess, UvicornThread, free_port, wait_until
from tests.support import OllamaScript, fake_ollama

pytestmark = pytest.mark.integration
GATEWAY_DIR = Path(__file__).resolve().parents[1]
AUTH_DIR = GATEWAY_DIR.parent / "auth"
ADMIN_KEY = "nx-" + secrets.token_urlsafe(32)
INTERNAL = secrets.token_urlsafe(24)
LIMIT, EXTRA = 20, 7


@pytest.fixture(scope="module")
def auth_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("auth")
    env = {
        "ETCD_ENDPOINTS": "",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'auth.db'}",
        "JWT_SIGNING_KEY_FILE": str(tmp / "jwt.pem"),
        "NEXUS_ADMIN_API_KEY": ADMIN_KEY,
        "NEXUS_INTERNAL_TOKEN": INTERNAL,
    }
    service = ServiceProcess(AUTH_DIR, env=env).start(wait="/readyz")
    try:
        yield service.url
    finally:
        service.stop()


class Workers:
    def __init__(self, proc: ServiceProcess, metrics_port: int) -> None:
        self.proc = proc
        self.url = proc.url
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    def metrics(self) -> str:
        return httpx.get(self.metrics_url, timeout=10).text

    def value(self, sample: str) -> float:
        match = re.search(rf"^{re.escape(sample)} (\S+)$", self.metrics(), re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def pids(self) -> list[int]:
        assert self.proc.proc is not None
        pid = self.proc.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [int(child) for child in children]


@pytest.fixture(scope="module")
def workers(auth_url: str) -> Iterator[Workers]:
    metrics_port = free_port()
    env = {
        "ETCD_ENDPOINTS": "",
        "OLLAMA_BASE_URL": "off",
        "AUTH_BASE_URL": auth_url,
        "NEXUS_AUTH_ENABLED": "true",
        "NEXUS_INTERNAL_TOKEN": INTERNAL,
        "RATE_LIMIT_STORAGE_URL": "",
        "GATEWAY_WORKERS": "2",
        "GATEWAY_METRICS_PORT": str(metrics_port),
        "GATEWAY_METRICS_HOST": "127.0.0.1",
        "SHUTDOWN_GRACE_S": "2",
    }
    port = free_port()
    args = [sys.executable, "-m", "app.workers", "--host", "127.0.0.1", "--port", str(port)]
    proc = ServiceProcess(GATEWAY_DIR, env=env, port=port, args=args)
    proc.start(wait="/readyz", timeout_s=60)
    running = Workers(proc, metrics_port)
    try:
        wait_until(lambda: running.value("nexus_gateway_workers") == 2, 60, "both workers up")
        yield running
    finally:
        pids = running.pids() if proc.proc is not None and proc.proc.poll() is None else []
        proc.stop()
        for pid in pids:  # the workers die with the supervisor; make sure of it
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def new_key(auth_url: str, rpm: int) -> str:
    resp = httpx.post(
        f"{auth_url}/v1/api-keys", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        json={"name": "workers-" + secrets.token_hex(4), "rate_limit_rpm": rpm}, timeout=10,
    )  # fmt: skip
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


def get_on_new_connection(url: str, key: str) -> int:
    with httpx.Client(timeout=20) as client:  # a new connection: a new source port to hash
        return client.get(
            f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}
        ).status_code


def test_workers_share_one_port_and_one_limit(workers: Workers, auth_url: str) -> None:
    key = new_key(auth_url, LIMIT)
    before = {w: workers.value(f'nexus_gateway_worker_requests_total{{worker="{w}"}}')
              for w in ("0", "1")}  # fmt: skip
    statuses = [get_on_new_connection(workers.url, key) for _ in range(LIMIT + EXTRA)]

    assert statuses.count(429) == EXTRA
    assert statuses.count(200) == LIMIT
    served = {w: workers.value(f'nexus_gateway_worker_requests_total{{worker="{w}"}}') - before[w]
              for w in ("0", "1")}  # fmt: skip
    assert served["0"] > 0, served  # both workers answered
    assert served["1"] > 0, served
    assert served["0"] + served["1"] >= LIMIT + EXTRA


def test_metrics_are_one_view_over_the_workers(workers: Workers, auth_url: str) -> None:
    key = new_key(auth_url, 1_000_000)
    sample = 'nexus_http_requests_total{method="GET",route="/v1/models",status="200"}'
    before = workers.value(sample)
    for _ in range(12):
        assert get_on_new_connection(workers.url, key) == 200
    assert workers.value(sample) - before == 12
    text = workers.metrics()
    assert text.count("# TYPE nexus_http_requests_total counter") == 1
    assert 'nexus_gateway_worker_up{worker="0"} 1.0' in text


def test_a_killed_worker_is_replaced_and_sigterm_stops_all(workers: Workers, auth_url: str) -> None:
    key = new_key(auth_url, 1_000_000)
    first = workers.pids()
    assert len(first) == 2
    os.kill(first[0], signal.SIGKILL)
    wait_until(lambda: workers.value("nexus_gateway_worker_restarts_total") == 1, 30, "a restart")
    wait_until(lambda: workers.value("nexus_gateway_workers") == 2, 60, "two workers again")
    assert first[0] not in workers.pids()
    assert all(get_on_new_connection(workers.url, key) == 200 for _ in range(8))

    pids = workers.pids()
    workers.proc.signal(signal.SIGTERM)
    assert workers.proc.wait(timeout_s=30) == 0
    wait_until(lambda: not any(alive(pid) for pid in pids), 10, "workers gone")
    with pytest.raises(httpx.ConnectError):
        httpx.get(workers.url + "/health", timeout=5)


def test_sigterm_lets_a_stream_in_flight_finish(tmp_path: Path) -> None:
    """SIGTERM to the supervisor while a stream is open: the worker drains, the stream ends
    whole, then everything exits 0."""
    script = OllamaScript()
    with UvicornThread(fake_ollama(script)) as ollama:
        env = {
            "ETCD_ENDPOINTS": "", "OLLAMA_BASE_URL": ollama.url, "NEXUS_AUTH_ENABLED": "false",
            "GATEWAY_WORKERS": "2", "GATEWAY_METRICS_PORT": "0", "SHUTDOWN_GRACE_S": "20",
        }  # fmt: skip
        port = free_port()
        args = [sys.executable, "-m", "app.workers", "--host", "127.0.0.1", "--port", str(port)]
        proc = ServiceProcess(GATEWAY_DIR, env=env, port=port, args=args)
        proc.start(wait="/readyz", timeout_s=60)
        try:
            body = {"model": "llama3.2", "stream": True,
                    "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
            wait_until(lambda: httpx.post(f"{proc.url}/v1/chat/completions",
                                          json={**body, "stream": False}, timeout=10)
                       .status_code == 200, 30, "the model routed")  # fmt: skip
            with (
                httpx.Client(timeout=30) as client,
                client.stream("POST", f"{proc.url}/v1/chat/completions", json=body) as resp,
            ):
                lines = resp.iter_lines()
                first = next(line for line in lines if line.startswith("data:"))
                proc.signal(signal.SIGTERM)
                wait_until(lambda: "gateway workers draining" in proc.output(), 20, "draining")
                script.release.set()
                rest = [line for line in lines if line.startswith("data:")]
            assert "Hel" in first
            assert any(" there" in line for line in rest)
            assert rest[-1] == "data: [DONE]"
            assert script.released_in_time is True
            assert proc.wait(timeout_s=60) == 0
        finally:
            proc.stop()


def test_a_taken_port_stops_the_start_with_a_reason() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "app.workers", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "2"],
            cwd=GATEWAY_DIR, capture_output=True, text=True, timeout=60,
            env={**os.environ, "GATEWAY_METRICS_PORT": "0", "OLLAMA_BASE_URL": "off"},
        )  # fmt: skip
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
