"""Backend choice: auto falls back with reasons; a named backend that cannot run says why."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from app.engine import Engine, build_engine
from app.settings import TTSSettings
from nexus_kit import load_settings
from tests.tts_support import FakeTTSModel, ScriptedBackend, fake_pocket_module, make_settings

SPEECH = {"model": "tts-1", "input": "Hello there.", "voice": "alloy", "response_format": "wav"}


async def settled(settings: TTSSettings) -> Engine:
    engine = build_engine(settings)
    engine.start()
    await engine.wait_settled()
    return engine


@pytest.fixture
def failing_pocket(monkeypatch: pytest.MonkeyPatch) -> None:
    """pocket-tts installed, but its weights cannot be fetched (as on this machine)."""
    model = type("TTSModel", (FakeTTSModel,), {"fail_load": "no network to fetch weights"})
    monkeypatch.setitem(sys.modules, "pocket_tts", fake_pocket_module(model))


async def test_auto_without_pocket_tts_package_uses_espeak() -> None:
    engine = await settled(make_settings(tts_backend="auto"))
    assert engine.backend.name == "espeak"
    assert engine.current.status == "ready"
    assert "pocket-tts unavailable: Python package pocket-tts is not installed" in (
        engine.describe()
    )
    await engine.aclose()


@pytest.mark.usefixtures("failing_pocket")
async def test_auto_with_pocket_weights_unavailable_falls_back_with_the_reason() -> None:
    engine = await settled(make_settings(tts_backend="auto"))
    assert engine.backend.name == "espeak"
    assert "pocket-tts failed: OSError: no network to fetch weights" in engine.describe()
    await engine.aclose()


async def test_auto_without_espeak_either_ends_on_the_stub(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # the wheel is not installed
    engine = await settled(make_settings(tts_backend="auto"))
    assert engine.backend.name == "stub"
    assert "espeak unavailable: espeakng-loader is not usable" in engine.describe()
    await engine.aclose()


async def test_auto_with_pocket_loaded_uses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pocket_tts", fake_pocket_module(FakeTTSModel))
    engine = await settled(make_settings(tts_backend="auto"))
    assert (engine.backend.name, engine.current.status) == ("pocket-tts", "ready")
    await engine.aclose()


async def test_readyz_and_metadata_name_the_backend_and_why(make_client: Any) -> None:
    client, _ = await make_client(make_settings(tts_backend="auto"))
    readyz = await client.get("/readyz")
    assert readyz.status_code == 200
    detail = readyz.json()["checks"]["backend"]["detail"]
    assert detail.startswith("espeak ready (skipped pocket-tts unavailable")
    meta = (await client.get("/v1/metadata")).json()
    assert meta["options"]["backend"] == "espeak"
    assert meta["options"]["backend_state"] == "ready"
    assert meta["options"]["voice_map"]["alloy"] == "en-us+f4"
    assert {"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "espeak-ng"} <= {
        m["id"] for m in meta["models"]
    }
    assert meta["endpoints"] == [
        {
            "path": "/v1/audio/speech",
            "method": "POST",
            "operation_id": "audio.speech",
            "streaming": True,
            "public": False,
            "summary": "Generate audio from text",
        }
    ]
    assert meta["capabilities"] == {
        "domains": ["audio"],
        "modalities": ["audio"],
        "streaming": True,
    }


async def test_named_pocket_tts_without_package_is_not_ready_and_says_why(make_client: Any) -> None:
    client, _ = await make_client(make_settings(tts_backend="pocket-tts"))
    readyz = await client.get("/readyz")
    assert readyz.status_code == 503
    check = readyz.json()["checks"]["backend"]
    assert check["status"] == "fail"
    assert "pocket-tts unavailable: Python package pocket-tts is not installed" in check["detail"]
    speech = await client.post("/v1/audio/speech", json=SPEECH)
    assert speech.status_code == 503
    assert speech.headers["retry-after"] == "5"
    assert "not installed" in speech.json()["error"]["message"]
    assert (await client.get("/health")).status_code == 200


@pytest.mark.usefixtures("failing_pocket")
async def test_named_pocket_tts_without_weights_is_not_ready(make_client: Any) -> None:
    client, _ = await make_client(make_settings(tts_backend="pocket-tts"))
    readyz = await client.get("/readyz")
    assert readyz.status_code == 503
    assert "OSError: no network to fetch weights" in readyz.json()["checks"]["backend"]["detail"]


async def test_named_espeak_without_its_data_is_not_ready(make_client: Any, tmp_path: Path) -> None:
    settings = make_settings(tts_backend="espeak", tts_espeak_data=str(tmp_path / "nodata"))
    client, _ = await make_client(settings)
    readyz = await client.get("/readyz")
    assert readyz.status_code == 503
    assert "data directory 'nodata' not found" in readyz.json()["checks"]["backend"]["detail"]
    assert (await client.post("/v1/audio/speech", json=SPEECH)).status_code == 503


class SlowBackend(ScriptedBackend):
    """Loads only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded = asyncio.Event()

    async def load(self) -> None:
        await self.loaded.wait()


async def test_loading_is_reported_until_the_backend_is_ready() -> None:
    backend = SlowBackend()
    engine = Engine([backend], fallback=False)
    assert engine.describe() == "scripted starting"
    engine.start()
    await asyncio.sleep(0)
    assert engine.describe() == "scripted loading"
    assert not (await engine.check()).ok
    backend.loaded.set()
    await engine.wait_settled()
    assert (await engine.check()).ok
    await engine.aclose()


def test_bad_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TTS_BACKEND", "festival")
    with pytest.raises(SystemExit) as exit_info:
        load_settings(TTSSettings, _env_file=None)
    assert exit_info.value.code == 2
    assert "TTS_BACKEND='festival'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("variable", "value"),
    [("tts_espeak_voices", "alloy"), ("tts_pocket_voices", "robot=alba"), ("tts_models", " , ")],
)
def test_bad_maps_and_lists_are_rejected(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=variable):
        make_settings(**{variable: value})


def test_env_example_documents_every_setting_and_loads() -> None:
    example = Path(__file__).resolve().parents[1] / ".env.example"
    # Optional settings without a default value are shown commented out.
    names = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example.read_text(), re.MULTILINE))
    assert names == {name.upper() for name in TTSSettings.model_fields}
    settings = TTSSettings(_env_file=example)  # type: ignore[call-arg]
    assert (settings.service_name, settings.service_port) == ("tts", 9940)
    assert settings.tts_backend == "auto"
    assert settings.instance_id.startswith("tts-")
