"""Gateway settings from the environment and ``.env``."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import load_gateway_settings


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.chdir(tmp_path)
    for name in ("OLLAMA_BASE_URL", "ETCD_ENDPOINTS", "TTS_BASE_URL", "TEMPLATE_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_are_the_documented_ones(env: pytest.MonkeyPatch) -> None:
    s = load_gateway_settings()
    assert (s.service_name, s.service_port, s.gateway_metrics_port) == ("gateway", 8800, 8801)
    assert s.backend_urls() == {"ollama": ("ollama", ["http://127.0.0.1:11434"])}
    assert (s.llm_first_byte_timeout_s, s.upstream_keepalive_s) == (300, 4)


def test_static_backends_come_from_env_and_dotenv(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TEMPLATE_BASE_URL=http://t:9000\nOLLAMA_BASE_URL=off\n")
    env.setenv("TTS_BASE_URL", "http://a:1,http://b:2")
    s = load_gateway_settings()
    assert s.backend_urls() == {
        "template": ("nexus", ["http://t:9000"]),
        "tts": ("nexus", ["http://a:1", "http://b:2"]),
    }


def test_a_bad_url_is_named_at_startup(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("OLLAMA_BASE_URL", "localhost:11434")
    with pytest.raises(SystemExit):
        load_gateway_settings()
    assert "OLLAMA_BASE_URL" in capsys.readouterr().err
