"""The Pocket TTS backend: Kyutai's ``pocket-tts`` package, a small TTS model that runs on CPU.

It is an optional dependency, found at run time: it pulls in PyTorch, which the workspace
lock must not carry (see the README for installing it). The model is loaded once, at
startup, on a background thread (``TTSModel.load_model`` fetches weights from the Hugging Face
hub unless they are cached or ``TTS_POCKET_CONFIG`` points at local ones); voice states are
prepared then too. ``generate_audio_stream`` yields audio as frames are decoded and honours a
stop event, so requests stream and a client that hangs up stops the generation. The model is
not thread-safe: one generation at a time, later requests queue (bounded; 429 beyond).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import Any

import numpy as np

from app.audio import SAMPLE_RATE, LinearResampler, to_pcm16
from app.backends import BackendBusyError, BackendError, SpeechJob
from app.threads import closing, in_daemon_thread, iterate_in_thread
from nexus_kit import get_logger

PACKAGE = "pocket_tts"
# OpenAI voices onto the package's catalogue voices (the ones every language config ships).
DEFAULT_VOICES: dict[str, str] = {
    "alloy": "alba",
    "ash": "marius",
    "ballad": "jean",
    "coral": "cosette",
    "echo": "javert",
    "fable": "fantine",
    "onyx": "javert",
    "nova": "eponine",
    "sage": "azelma",
    "shimmer": "cosette",
    "verse": "marius",
    "marin": "alba",
    "cedar": "jean",
}
DEFAULT_VOICE = "alloy"
log = get_logger("tts.pocket")


def to_samples(chunk: Any) -> np.ndarray:
    """A PyTorch tensor (or anything array-like) → 1-D float32 numpy."""
    if hasattr(chunk, "detach"):
        chunk = chunk.detach().cpu().numpy()
    return np.asarray(chunk, dtype=np.float32).reshape(-1)


class PocketTTSBackend:
    name = "pocket-tts"
    models: tuple[str, ...] = ("pocket-tts",)
    native_speed = False  # the model has no speed control; the service time-stretches

    def __init__(
        self,
        language: str = "english",
        config: str = "",
        voices: Mapping[str, str] | None = None,
        quantize: bool = False,
        max_queue: int = 8,
    ) -> None:
        self.language = language
        self.config = config
        self.voices = {**DEFAULT_VOICES, **(voices or {})}
        self.quantize = quantize
        self.max_queue = max_queue
        self._model: Any = None
        self._states: dict[str, Any] = {}
        self._model_lock = threading.Lock()  # the model is not thread-safe
        self._admitted = 0  # requests generating or waiting for the model

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec(PACKAGE) is None:
            return "Python package pocket-tts is not installed (it needs PyTorch; see README)"
        return None

    async def load(self) -> None:
        self._model = await in_daemon_thread(self._load_model, "pocket-tts-load")
        await in_daemon_thread(self._load_voices, "pocket-tts-voices")

    def _load_model(self) -> Any:
        from pocket_tts import TTSModel  # optional dependency, present per unavailable_reason()

        source = {"config": self.config} if self.config else {"language": self.language}
        return TTSModel.load_model(quantize=self.quantize, **source)

    def _load_voices(self) -> None:
        """Voice states for every mapped voice; the default one must work, others fall back."""
        by_source: dict[str, Any] = {}
        default_source = self.voices[DEFAULT_VOICE]
        by_source[default_source] = self._model.get_state_for_audio_prompt(default_source)
        for voice, source in self.voices.items():
            if source not in by_source:
                try:
                    by_source[source] = self._model.get_state_for_audio_prompt(source)
                except Exception as exc:
                    log.warning("voice unavailable; using the default", voice=voice, error=str(exc))
                    by_source[source] = by_source[default_source]
            self._states[voice] = by_source[source]

    async def synthesize(self, job: SpeechJob) -> AsyncGenerator[bytes, None]:
        if self._model is None:
            raise BackendError("the Pocket TTS model is not loaded")
        if self._admitted > self.max_queue:  # one generating, max_queue waiting
            raise BackendBusyError("the Pocket TTS queue is full")
        self._admitted += 1
        try:
            resampler = LinearResampler(int(self._model.sample_rate), SAMPLE_RATE)
            chunks = iterate_in_thread(lambda stop: self._generate(job, stop), "pocket-tts-gen")
            async with closing(chunks) as samples_stream:
                async for samples in samples_stream:
                    yield to_pcm16(resampler.feed(samples))
        finally:
            self._admitted -= 1

    def _generate(self, job: SpeechJob, stop: threading.Event) -> Iterator[np.ndarray]:
        with self._model_lock:
            state = self._states.get(job.voice) or self._states[DEFAULT_VOICE]
            for chunk in self._model.generate_audio_stream(state, job.text, stop=stop):
                yield to_samples(chunk)

    def voice_map(self) -> Mapping[str, str]:
        return dict(self.voices)

    async def aclose(self) -> None:
        self._model = None
        self._states.clear()
