"""PCM conversion, the streaming resampler and the time stretch, fed in odd-sized chunks."""

from __future__ import annotations

import numpy as np
import pytest

from app.audio import SAMPLE_RATE, FloatArray, LinearResampler, from_pcm16, to_pcm16
from app.stretch import TimeStretch


def sine(seconds: float, frequency: float = 220.0, rate: int = SAMPLE_RATE) -> FloatArray:
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def in_chunks(samples: FloatArray, size: int = 1237) -> list[FloatArray]:
    return [samples[i : i + size] for i in range(0, len(samples), size)]


def frequency_of(samples: FloatArray, rate: int = SAMPLE_RATE) -> float:
    crossings = np.count_nonzero(np.diff(np.signbit(samples)))
    return crossings / 2 / (len(samples) / rate)


def test_pcm16_round_trip_and_clipping() -> None:
    samples = np.array([0.0, 0.5, -0.5, 2.0, -2.0], dtype=np.float32)
    back = from_pcm16(to_pcm16(samples))
    assert np.allclose(back[:3], samples[:3], atol=1e-4)
    assert back[3] == pytest.approx(1.0, abs=1e-4)
    assert back[4] == pytest.approx(-1.0, abs=1e-4)


@pytest.mark.parametrize("source_rate", [16_000, 22_050, 44_100])
def test_resampler_keeps_duration_and_pitch_across_chunks(source_rate: int) -> None:
    resampler = LinearResampler(source_rate)
    out = np.concatenate([resampler.feed(c) for c in in_chunks(sine(2.0, rate=source_rate))])
    assert len(out) / SAMPLE_RATE == pytest.approx(2.0, abs=0.001)
    assert frequency_of(out) == pytest.approx(220.0, rel=0.01)


def test_resampler_at_the_target_rate_passes_through() -> None:
    samples = sine(0.1)
    assert LinearResampler(SAMPLE_RATE).feed(samples) is samples


@pytest.mark.parametrize("speed", [0.25, 0.5, 2.0, 4.0])
def test_time_stretch_changes_duration_not_pitch(speed: float) -> None:
    stretch = TimeStretch(speed)
    parts = [stretch.feed(c) for c in in_chunks(sine(2.0))]
    out = np.concatenate([*parts, stretch.flush()])
    assert len(out) / SAMPLE_RATE == pytest.approx(2.0 / speed, rel=0.05)
    body = out[SAMPLE_RATE // 10 : -SAMPLE_RATE // 10]
    assert frequency_of(body) == pytest.approx(220.0, rel=0.02)
    assert float(np.sqrt(np.mean(body**2))) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)


def test_time_stretch_streams_output_before_flush() -> None:
    stretch = TimeStretch(0.5)
    early = np.concatenate([stretch.feed(c) for c in in_chunks(sine(1.0))])
    assert len(early) > SAMPLE_RATE  # most of the 2 s came out while input was still arriving
