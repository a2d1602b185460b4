"""A throwaway virtualenv with LiteLLM's proxy, and its config pointed at the mock upstream.

LiteLLM is only a point of comparison, so it never enters the workspace's lock: it lives in
``bench/.litellm-venv/`` (git-ignored), made with plain ``python3 -m venv`` + pip.

    .venv/bin/python bench/litellm_venv.py          # create/refresh the venv, print the version
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Newest release whose [proxy] extra installs from the registry here: 1.109+ require a
# separate `litellm-proxy` package that is not published there.
LITELLM_VERSION = "1.108.7"
BENCH_DIR = Path(__file__).resolve().parent
VENV_DIR = BENCH_DIR / ".litellm-venv"
STAMP = VENV_DIR / ".installed"
INSTALL_TIMEOUT_S = 600.0
# The proxy key LiteLLM checks (no database: the master key is the only key it knows).
MASTER_KEY = "sk-nexus-bench-master"


class LiteLLMUnavailable(RuntimeError):
    """LiteLLM could not be installed or found; the message says why."""


def _python() -> Path:
    return VENV_DIR / "bin" / "python"


def litellm_cli() -> Path:
    return VENV_DIR / "bin" / "litellm"


def installed_version() -> str | None:
    """The version recorded by a finished install, else None."""
    if not STAMP.exists() or not litellm_cli().exists():
        return None
    return STAMP.read_text().strip() or None


def _run(cmd: list[str], timeout_s: float) -> None:
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, check=False,
            start_new_session=True,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        what = " ".join(cmd[:3])
        raise LiteLLMUnavailable(f"{what}... timed out after {timeout_s:.0f}s") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise LiteLLMUnavailable(f"{' '.join(cmd[:4])}... failed: {' | '.join(tail)}")


def ensure_venv(version: str = LITELLM_VERSION, timeout_s: float = INSTALL_TIMEOUT_S) -> str:
    """Create the venv with ``litellm[proxy]==version`` unless it is there; return the version."""
    if installed_version() == version:
        return version
    base = shutil.which("python3") or sys.executable
    if VENV_DIR.exists():
        shutil.rmtree(VENV_DIR)
    _run([base, "-m", "venv", str(VENV_DIR)], timeout_s=120)
    _run(
        [
            str(_python()), "-m", "pip", "install", "-q", "--disable-pip-version-check",
            f"litellm[proxy]=={version}",
        ],
        timeout_s=timeout_s,
    )  # fmt: skip
    if not litellm_cli().exists():
        raise LiteLLMUnavailable(f"pip installed litellm[proxy]=={version} but no litellm CLI")
    STAMP.write_text(version + "\n")
    return version


def write_config(path: Path, mock_url: str, models: list[str]) -> Path:
    """A LiteLLM proxy config: each model name is ``openai/<name>`` at the mock, no database."""
    config = {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {
                    "model": f"openai/{name}",
                    "api_base": f"{mock_url}/v1",
                    "api_key": "sk-mock",
                },
            }
            for name in models
        ],
        "litellm_settings": {"drop_params": True, "telemetry": False},
        "general_settings": {"master_key": MASTER_KEY},
    }
    # JSON is valid YAML; LiteLLM reads the file with a YAML loader.
    path.write_text(json.dumps(config, indent=2))
    return path


def proxy_env() -> dict[str, str]:
    """Environment for the proxy: no network fetches at start-up, quiet logs, no database."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "VIRTUAL_ENV"}}
    env.update(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "LITELLM_LOG": "ERROR",
            "DISABLE_ADMIN_UI": "True",
            "NO_DOCS": "True",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def proxy_command(config: Path, port: int) -> list[str]:
    return [
        str(litellm_cli()), "--config", str(config), "--host", "127.0.0.1",
        "--port", str(port), "--num_workers", "1",
    ]  # fmt: skip


def main() -> int:
    try:
        version = ensure_venv()
    except LiteLLMUnavailable as exc:
        print(f"LiteLLM unavailable: {exc}", file=sys.stderr)
        return 1
    print(f"litellm[proxy]=={version} in {VENV_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
