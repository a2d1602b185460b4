"""The stub backend: a tone burst per word, for tests and machines with nothing else.

Deterministic (same text, voice and speed → same samples), audible, and paced like speech
(about 0.3 s per word at speed 1) so durations and streaming behave like a real backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping

import numpy as np

from app.audio import SAMPLE_RATE, FloatArray, to_pcm16
from app.backends import SpeechJob
from app.schemas import VOICES

WORD_S = 0.22
GAP_S = 0.08


def _pitch(voice: str) -> float:
    return 140.0 + 25.0 * VOICES.index(voice) if voice in VOICES else 200.0


def tone(seconds: float, frequency: float, rate: int = SAMPLE_RATE) -> FloatArray:
    n = max(1, int(seconds * rate))
    t = np.arange(n, dtype=np.float32) / rate
    envelope = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)  # 20 ms fades: no clicks
    wave: FloatArray = (0.4 * envelope * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    return wave


class StubBackend:
    name = "stub"
    models: tuple[str, ...] = ("stub",)
    native_speed = True

    def unavailable_reason(self) -> str | None:
        return None

    async def load(self) -> None:
        return None

    async def synthesize(self, job: SpeechJob) -> AsyncGenerator[bytes, None]:
        base = _pitch(job.voice)
        gap = np.zeros(int(GAP_S / job.speed * SAMPLE_RATE), dtype=np.float32)
        for index, word in enumerate(job.text.split()):
            # A little melody from the word itself, so output depends on the text.
            frequency = base * (1.0 + 0.05 * (len(word) % 5) + 0.02 * (index % 3))
            yield to_pcm16(np.concatenate([tone(WORD_S / job.speed, frequency), gap]))
            await asyncio.sleep(0)  # let the response go out between words

    def voice_map(self) -> Mapping[str, str]:
        return {voice: f"tone {_pitch(voice):g} Hz" for voice in VOICES}

    async def aclose(self) -> None:
        return None
