"""Settings: env, .env file, and one clear line naming a bad variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nexus_kit import ServiceSettings, load_settings


def test_env_and_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("SERVICE_NAME=acme\nSERVICE_PORT=9123\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SERVICE_PORT", "9200")  # env wins over .env
    settings = load_settings(ServiceSettings)
    assert (settings.service_name, settings.service_port) == ("acme", 9200)
    assert settings.advertise_url == "http://127.0.0.1:9200"
    assert settings.instance_id.startswith("acme-")
    assert settings.instance_id == settings.instance_id  # stable


def test_empty_values_mean_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("SERVICE_INSTANCE_ID=\nSERVICE_ADVERTISE_URL=\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(ServiceSettings, service_name="x")
    assert settings.instance_id.startswith("x-")
    assert settings.advertise_url == "http://127.0.0.1:8000"


def test_prefix_gets_trailing_slash() -> None:
    assert ServiceSettings(nexus_etcd_prefix="/x/svc").nexus_etcd_prefix == "/x/svc/"


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"SERVICE_PORT": "abc"}, "SERVICE_PORT"),
        ({"SERVICE_PORT": "70000"}, "SERVICE_PORT"),
        ({"ETCD_ENDPOINTS": "127.0.0.1:2379"}, "ETCD_ENDPOINTS"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"SERVICE_NAME": "Bad Name"}, "SERVICE_NAME"),
    ],
)
def test_bad_value_stops_with_one_line(tmp_path: Path, env: dict[str, str], name: str) -> None:
    code = "from nexus_kit import ServiceSettings, load_settings; load_settings(ServiceSettings)"
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**env, "PATH": ""}, cwd=tmp_path,
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert name in lines[0]
    assert "Traceback" not in proc.stderr


def test_secret_values_are_not_echoed(tmp_path: Path) -> None:
    code = (
        "from nexus_kit import ServiceSettings, load_settings\n"
        "class S(ServiceSettings):\n"
        "    api_token: int = 0\n"
        "load_settings(S)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env={"API_TOKEN": "hunter2-secret", "PATH": ""},
        cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == 2
    assert "API_TOKEN" in proc.stderr
    assert "hunter2" not in proc.stderr
