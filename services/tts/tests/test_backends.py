"""Each backend for real where this machine allows: stub, espeak (libespeak-ng from its
wheel); Pocket TTS against a stand-in for its package (PyTorch and the model weights cannot be
installed here)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np
import pytest

from app.audio import SAMPLE_RATE, from_pcm16
from app.backends import BackendBusyError, BackendError, SpeechJob, TTSBackend, libespeak
from app.backends.espeak import EspeakBackend, rate_for
from app.backends.pocket_tts import PocketTTSBackend
from app.backends.stub import StubBackend
from tests.tts_support import (
    SENTENCE,
    FakeTTSModel,
    assert_audible,
    collect,
    fake_pocket_module,
    pitch_hz,
    speech_bounds,
    tonality,
    wait_until_async,
)


async def speak(backend: TTSBackend, text: str = SENTENCE, **job: object) -> np.ndarray:
    pcm = await collect(backend.synthesize(SpeechJob(text=text, voice="alloy", **job)))  # type: ignore[arg-type]
    assert len(pcm) % 2 == 0
    return from_pcm16(pcm)


def test_every_backend_satisfies_the_protocol() -> None:
    for backend in (StubBackend(), EspeakBackend(), PocketTTSBackend()):
        assert isinstance(backend, TTSBackend)


async def test_stub_is_deterministic_paced_and_speed_aware() -> None:
    backend = StubBackend()
    first, again = await speak(backend), await speak(backend)
    assert np.array_equal(first, again)
    assert_audible(first, SAMPLE_RATE, *speech_bounds(SENTENCE))
    fast = await speak(backend, speed=2.0)
    assert len(fast) == pytest.approx(len(first) / 2, rel=0.01)


async def test_espeak_speaks_for_real() -> None:
    backend = EspeakBackend()
    assert backend.unavailable_reason() is None
    await backend.load()
    samples = await speak(backend)
    assert_audible(samples, SAMPLE_RATE, *speech_bounds(SENTENCE))
    # Speech, not a tone: harmonics and formants spread the energy over the spectrum.
    assert tonality(samples) < 0.6
    assert tonality(await speak(StubBackend())) > 0.9  # the measure tells the stub apart


async def test_espeak_voices_sound_different() -> None:
    backend = EspeakBackend()
    await backend.load()
    nova = from_pcm16(await collect(backend.synthesize(SpeechJob(SENTENCE, "nova"))))
    onyx = from_pcm16(await collect(backend.synthesize(SpeechJob(SENTENCE, "onyx"))))
    # nova is a female variant (en-us+f3), onyx a male one (en-us+m7): an octave or so apart.
    assert pitch_hz(nova) > 1.4 * pitch_hz(onyx)
    assert backend.voice_map()["nova"] == "en-us+f3"


@pytest.mark.parametrize("speed", [0.25, 0.5, 2.0, 4.0])
async def test_espeak_applies_speed(speed: float) -> None:
    backend = EspeakBackend()
    await backend.load()
    normal = len(await speak(backend, "One two three four five six."))
    changed = len(await speak(backend, "One two three four five six.", speed=speed))
    ratio = normal / changed
    # espeak's rate is in words per minute, not exact time: within 35% of the asked speed.
    assert speed * 0.65 <= ratio <= speed * 1.35


def test_espeak_rate_mapping() -> None:
    assert rate_for(1.0) == (175, 1.0)
    assert rate_for(4.0) == (700, 1.0)
    wpm, stretch = rate_for(0.25)  # below espeak's floor: the rest is stretched
    assert wpm == 80
    assert stretch == pytest.approx(0.25 * 175 / 80)


async def test_espeak_voice_overrides_by_name_or_language() -> None:
    # "en-gb" is no voice file name (that is "en"): it is found by language, as the
    # espeak-ng program does, with its variant.
    backend = EspeakBackend(voices={"alloy": "en-gb+f2"})
    assert backend.voice_map()["alloy"] == "en-gb+f2"
    assert backend.voice_map()["echo"] == "en-us+m2"
    await backend.load()
    assert_audible(await speak(backend), SAMPLE_RATE, *speech_bounds(SENTENCE))


async def test_espeak_unknown_voice_fails_at_load_with_its_name() -> None:
    with pytest.raises(BackendError, match="no voice 'xx-nowhere'"):
        await EspeakBackend(voices={"alloy": "xx-nowhere"}).load()


def test_espeak_without_the_wheel_is_unavailable_with_a_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import fails
    reason = EspeakBackend().unavailable_reason()
    assert reason is not None
    assert "espeakng-loader" in reason


async def test_espeak_missing_data_directory_fails_to_load(tmp_path: Path) -> None:
    backend = EspeakBackend(library=str(tmp_path / "libnone.so"), data=str(tmp_path / "gone"))
    with pytest.raises(BackendError, match="data directory 'gone' not found"):
        await backend.load()


async def test_espeak_stops_when_the_consumer_goes_away() -> None:
    backend = EspeakBackend()
    await backend.load()
    stream = backend.synthesize(SpeechJob(text=SENTENCE * 30, voice="alloy"))
    assert await anext(stream)
    assert libespeak.running() == 1  # blocked on the hand-off: the consumer is not reading
    await stream.aclose()  # tells the synthesis callback to abort
    assert await wait_until_async(lambda: libespeak.running() == 0)


async def test_espeak_syntheses_take_turns() -> None:
    backend = EspeakBackend()
    await backend.load()
    texts = ["One two three.", "Four five six seven.", "Eight nine."]
    together = await asyncio.gather(*(speak(backend, text) for text in texts))
    alone = [await speak(backend, text) for text in texts]
    # Interleaved calls into the (non re-entrant) library would corrupt or mix the audio.
    # espeak adds noise of its own (breath), so not bit-equal: same length, same loudness
    # contour (RMS per 20 ms).
    for a, b in zip(together, alone, strict=True):
        assert len(a) == len(b)
        assert np.corrcoef(envelope(a), envelope(b))[0, 1] > 0.95


def envelope(samples: np.ndarray, frame: int = SAMPLE_RATE // 50) -> np.ndarray:
    usable = len(samples) - len(samples) % frame
    rms: np.ndarray = np.sqrt(np.mean(np.square(samples[:usable].reshape(-1, frame)), axis=1))
    return rms


# --- Pocket TTS, against a stand-in for the package --------------------------------------


@pytest.fixture
def pocket(monkeypatch: pytest.MonkeyPatch) -> type[FakeTTSModel]:
    """``pocket_tts`` importable, with a fresh stand-in model class per test."""
    model = type("TTSModel", (FakeTTSModel,), {"fail_load": None, "loaded_with": None})
    monkeypatch.setitem(sys.modules, "pocket_tts", fake_pocket_module(model))
    return model


def test_pocket_without_the_package_is_unavailable() -> None:
    assert "pocket_tts" not in sys.modules
    reason = PocketTTSBackend().unavailable_reason()
    assert reason is not None
    assert "pocket-tts is not installed" in reason


async def test_pocket_loads_the_language_model_and_voice_states(
    pocket: type[FakeTTSModel],
) -> None:
    backend = PocketTTSBackend(language="french", quantize=True)
    assert backend.unavailable_reason() is None
    await backend.load()
    assert pocket.loaded_with == {"language": "french", "config": None, "quantize": True}
    assert backend._model is not None
    assert sorted(set(backend._model.prompts)) == sorted(set(backend.voice_map().values()))


async def test_pocket_loads_a_config_file_instead_when_given(
    pocket: type[FakeTTSModel],
) -> None:
    backend = PocketTTSBackend(config="/models/pocket.yaml")
    await backend.load()
    assert pocket.loaded_with == {
        "language": None,
        "config": "/models/pocket.yaml",
        "quantize": False,
    }


async def test_pocket_load_failure_propagates(pocket: type[FakeTTSModel]) -> None:
    pocket.fail_load = "cannot reach the Hugging Face hub for the weights"
    with pytest.raises(OSError, match="Hugging Face"):
        await PocketTTSBackend().load()


async def test_pocket_voice_that_fails_falls_back_to_the_default(
    pocket: type[FakeTTSModel],
) -> None:
    backend = PocketTTSBackend(voices={"echo": "missing-voice"})
    await backend.load()
    assert backend._states["echo"] == backend._states["alloy"]


async def test_pocket_streams_pcm_and_needs_the_service_to_apply_speed(
    pocket: type[FakeTTSModel],
) -> None:
    backend = PocketTTSBackend()
    await backend.load()
    assert not backend.native_speed
    samples = await speak(backend)
    assert len(samples) == 9 * int(0.3 * SAMPLE_RATE)  # a 0.3 s chunk per word
    assert_audible(samples, SAMPLE_RATE, *speech_bounds(SENTENCE))


async def test_pocket_output_at_another_rate_is_resampled(pocket: type[FakeTTSModel]) -> None:
    pocket.sample_rate = 16_000
    backend = PocketTTSBackend()
    await backend.load()
    samples = await speak(backend, "one two")
    assert len(samples) / SAMPLE_RATE == pytest.approx(0.6, abs=0.01)


async def test_pocket_stops_generating_when_the_consumer_goes_away(
    pocket: type[FakeTTSModel],
) -> None:
    backend = PocketTTSBackend()
    await backend.load()
    stream = backend.synthesize(SpeechJob(text=SENTENCE * 50, voice="alloy"))
    assert await anext(stream)
    await stream.aclose()
    assert backend._model.stops[-1].is_set()


async def test_pocket_before_loading_is_an_error() -> None:
    with pytest.raises(BackendError, match="not loaded"):
        await speak(PocketTTSBackend())


async def test_pocket_queue_beyond_its_bound_is_busy(pocket: type[FakeTTSModel]) -> None:
    backend = PocketTTSBackend(max_queue=1)
    await backend.load()
    first = backend.synthesize(SpeechJob(text=SENTENCE, voice="alloy"))
    second = backend.synthesize(SpeechJob(text=SENTENCE, voice="alloy"))
    assert await anext(first)
    assert await anext(second)  # generating + one waiting (here: run one after the other)
    with pytest.raises(BackendBusyError):
        await anext(backend.synthesize(SpeechJob(text="Hi.", voice="alloy")))
    await first.aclose()
    await second.aclose()
    assert await collect(backend.synthesize(SpeechJob(text="Hi.", voice="alloy")))
