"""What the TTS app holds for its lifetime (``app.state.tts``) and what it advertises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from nexus_kit import CheckResult, ModelInfo

from .audio import SAMPLE_RATE
from .encoding import Encoders
from .engine import Engine
from .metrics import TTSMetrics
from .schemas import MAX_SPEED, MIN_SPEED, STREAM_FORMATS, VOICES
from .settings import TTSSettings

OWNER = "nexus-tts"


@dataclass
class Catalog:
    """Models and options for ``/v1/metadata``, read live: the backend may change at startup."""

    settings: TTSSettings
    engine: Engine
    encoders: Encoders

    def model_ids(self) -> list[str]:
        ids = list(self.settings.model_ids)
        return ids + [m for m in self.engine.backend.models if m not in ids]

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=model, owned_by=OWNER) for model in self.model_ids()]

    def options(self) -> dict[str, Any]:
        return {
            "voices": list(VOICES),
            "response_formats": self.encoders.available,
            "stream_formats": list(STREAM_FORMATS),
            "speed": {"min": MIN_SPEED, "max": MAX_SPEED},
            "sample_rate": SAMPLE_RATE,
            "backend": self.engine.backend.name,
            "backend_state": self.engine.current.status,
            "backend_detail": self.engine.describe(),
            "voice_map": dict(self.engine.backend.voice_map()),
        }

    async def formats_check(self) -> CheckResult:
        missing = [f for f in ("mp3", "opus", "aac", "flac") if f not in self.encoders.available]
        detail = f"formats: {', '.join(self.encoders.available)}"
        if missing:
            detail += f"; unavailable: {', '.join(missing)} (no encoder in this FFmpeg build)"
        return CheckResult(not missing, detail)


@dataclass
class TTSState:
    engine: Engine
    encoders: Encoders
    catalog: Catalog
    metrics: TTSMetrics


def tts_state(request: Request) -> TTSState:
    state: TTSState = request.app.state.tts
    return state
