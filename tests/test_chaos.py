"""The chaos suite's smaller version (``make chaos`` runs the full one): zero failed requests.

Runs ``scripts/chaos.py --quick`` as its own process: a real etcd, auth, two template replicas
and the gateway on loopback, each experiment under bounded load (see the script's docstring).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_quick_chaos_loses_no_request() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "chaos.py"), "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=540, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "| etcd frozen (SIGSTOP) |" in done.stdout
