"""Helpers for the TTS tests: settings, decoding, and backends whose behaviour a test controls."""

from __future__ import annotations

import asyncio
import importlib.machinery
import io
import threading
import time
import types
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import av
import numpy as np
import soundfile
from jsonschema import Draft202012Validator

from app.audio import SAMPLE_RATE, FloatArray, seconds_of, to_pcm16
from app.backends import BackendBusyError, SpeechJob, TTSBackend
from app.backends.stub import tone
from app.settings import TTSSettings
from nexus_testing.openai_schema import components as openai_components

SENTENCE = "The quick brown fox jumps over the lazy dog."  # nine words
LONG_TEXT = " ".join([SENTENCE] * 12)


def make_settings(**values: Any) -> TTSSettings:
    """Settings from explicit values only: no environment, no .env file."""
    values.setdefault("tts_backend", "stub")
    return TTSSettings(_env_file=None, **values)  # type: ignore[call-arg]


def decode(data: bytes, response_format: str) -> tuple[FloatArray, int]:
    """Any response body → mono float samples and rate, with the decoder a client would use."""
    if response_format == "pcm":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, SAMPLE_RATE
    if response_format == "aac":
        return decode_with_pyav(data)
    # libsndfile (soundfile) for the rest: a decoder independent of the FFmpeg that encoded.
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples[:, 0], int(rate)


def decode_with_pyav(data: bytes) -> tuple[FloatArray, int]:
    """Decode with FFmpeg (PyAV), as a player would: mono float at the stream's rate."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        blocks = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
    return np.concatenate(blocks).astype(np.float32), rate


def assert_audible(samples: FloatArray, rate: int, min_s: float, max_s: float) -> None:
    duration = len(samples) / rate
    assert min_s <= duration <= max_s, f"{duration:.2f}s not in [{min_s}, {max_s}]"
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    assert rms > 0.01, f"silent audio (rms {rms:.4f})"


def speech_bounds(text: str, speed: float = 1.0) -> tuple[float, float]:
    """Plausible duration of spoken ``text``: 0.15 to 0.8 s a word at speed 1."""
    words = len(text.split())
    return 0.15 * words / speed, 0.8 * words / speed + 0.5


def tonality(samples: FloatArray, rate: int = SAMPLE_RATE) -> float:
    """Median share of a 50 ms frame's energy within ±3 FFT bins of its peak: ~1 for a pure
    tone (the stub), well under 0.6 for speech (harmonics and formants)."""
    frame = rate // 20
    shares = []
    for start in range(0, len(samples) - frame, frame):
        chunk = samples[start : start + frame]
        if np.sqrt(np.mean(np.square(chunk))) < 0.01:
            continue  # silence between words
        power = np.abs(np.fft.rfft(chunk * np.hanning(frame))) ** 2
        peak = int(np.argmax(power))
        shares.append(power[max(0, peak - 3) : peak + 4].sum() / power.sum())
    assert shares, "no audible frame"
    return float(np.median(shares))


def pitch_hz(samples: FloatArray, rate: int = SAMPLE_RATE) -> float:
    """Median fundamental frequency (autocorrelation over 50 ms voiced frames, 60-400 Hz)."""
    frame, low, high = rate // 20, rate // 400, rate // 60
    found = []
    for start in range(0, len(samples) - frame, frame):
        chunk = samples[start : start + frame]
        if np.sqrt(np.mean(np.square(chunk))) < 0.02:
            continue
        chunk = chunk - chunk.mean()
        corr = np.correlate(chunk, chunk, "full")[frame - 1 :]
        found.append(rate / (low + int(np.argmax(corr[low:high]))))
    assert found, "no voiced frame"
    return float(np.median(found))


async def wait_until_async(predicate: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    """Poll ``predicate`` on the loop until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


class ScriptedBackend:
    """A backend a test drives: tone chunks, with a failure or a gate where the test wants.

    ``gate_after_s``: after that much audio, wait for ``release`` (set by the test once the
    client holds the first bytes) before producing the rest; ``finished`` is set at the end.
    """

    name = "scripted"
    models: tuple[str, ...] = ("scripted",)
    native_speed = True

    def __init__(
        self,
        chunks: int = 6,
        chunk_s: float = 0.25,
        fail_at: int | None = None,
        busy: bool = False,
        gate_after_s: float | None = None,
        inner: TTSBackend | None = None,
    ) -> None:
        self.chunks, self.chunk_s, self.fail_at, self.busy = chunks, chunk_s, fail_at, busy
        self.gate_after_s = gate_after_s
        self.inner = inner
        self.release = threading.Event()
        self.finished = threading.Event()
        self.gate_opened_by_client = False
        self.calls = 0

    def unavailable_reason(self) -> str | None:
        return None

    async def load(self) -> None:
        if self.inner is not None:
            await self.inner.load()

    async def _source(self, job: SpeechJob) -> AsyncIterator[bytes]:
        if self.inner is not None:
            async for block in self.inner.synthesize(job):
                yield block
            return
        for index in range(self.chunks):
            if index == self.fail_at:
                raise RuntimeError("scripted backend crash")
            yield to_pcm16(tone(self.chunk_s, 220.0 + 20 * index))

    async def synthesize(self, job: SpeechJob) -> AsyncIterator[bytes]:
        self.calls += 1
        if self.busy:
            raise BackendBusyError("scripted queue full")
        produced, gated = 0, self.gate_after_s is None
        async for block in self._source(job):
            yield block
            produced += len(block)
            if not gated and seconds_of(produced) >= (self.gate_after_s or 0):
                gated = True
                self.gate_opened_by_client = await asyncio.to_thread(self.release.wait, 30)
        self.finished.set()

    def voice_map(self) -> Mapping[str, str]:
        return {"alloy": "scripted"}

    async def aclose(self) -> None:
        return None


class FakeTensor:
    """Stands in for the torch tensors Pocket TTS yields (``detach().cpu().numpy()``)."""

    def __init__(self, data: FloatArray) -> None:
        self.data = data

    def detach(self) -> FakeTensor:
        return self

    def cpu(self) -> FakeTensor:
        return self

    def numpy(self) -> FloatArray:
        return self.data


class FakeTTSModel:
    """The slice of ``pocket_tts.TTSModel`` the backend uses, with the same signatures."""

    fail_load: str | None = None
    sample_rate = 24_000
    loaded_with: dict[str, Any] | None = None

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.stops: list[threading.Event] = []

    @classmethod
    def load_model(cls, language: str | None = None, config: str | None = None,
                   quantize: bool = False, **kw: Any) -> FakeTTSModel:  # fmt: skip
        cls.loaded_with = {"language": language, "config": config, "quantize": quantize}
        if cls.fail_load:
            raise OSError(cls.fail_load)
        return cls()

    def get_state_for_audio_prompt(self, source: str, truncate: bool = False) -> dict[str, str]:
        if source == "missing-voice":
            raise FileNotFoundError(source)
        self.prompts.append(source)
        return {"voice": source}

    def generate_audio_stream(
        self, model_state: dict[str, str], text_to_generate: str,
        stop: threading.Event | None = None, **kw: Any,
    ) -> Iterator[FakeTensor]:  # fmt: skip
        assert stop is not None
        self.stops.append(stop)
        for _ in text_to_generate.split():
            if stop.is_set():
                return
            yield FakeTensor(tone(0.3, 200.0, self.sample_rate))


def fake_pocket_module(model: type[FakeTTSModel]) -> types.ModuleType:
    module = types.ModuleType("pocket_tts")
    module.__spec__ = importlib.machinery.ModuleSpec("pocket_tts", None)
    module.TTSModel = model  # type: ignore[attr-defined]
    return module


def check_openai_schema(name: str, document: Any) -> None:
    """Validate ``document`` against OpenAI's component schema ``name`` (JSON Schema 2020-12)."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": openai_components()}
    Draft202012Validator(schema).validate(document)
