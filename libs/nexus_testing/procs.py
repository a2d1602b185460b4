"""A service started exactly as its container runs it: ``uvicorn app.main:app`` in its directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .net import free_port, wait_for_http


class ServiceProcess:
    def __init__(
        self,
        service_dir: str | Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.service_dir = Path(service_dir)
        self.port = port or free_port()
        self.env = {
            **os.environ,
            "SERVICE_PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
            "PRESTOP_DELAY_S": "0",  # tests stop at once unless they ask for the window
            **(env or {}),
        }
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        fd, self.log_path = tempfile.mkstemp(prefix="nexus-svc-", suffix=".log")
        os.close(fd)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: str | None = "/health", timeout_s: float = 30.0) -> ServiceProcess:
        cmd = self.args or [
            sys.executable, "-m", "uvicorn", "app.main:app",
            "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=self.service_dir, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            try:
                wait_for_http(self.url + wait, timeout_s=timeout_s)
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}\n--- log ---\n{self.output()}") from None
        return self

    def output(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
