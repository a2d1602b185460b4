"""The service's one PCM shape (24 kHz, 16-bit little-endian, mono) and the DSP to reach it.

Backends hand over audio in this shape, whatever their engine produces, so the encoders and
the ``pcm`` response format never have to care which backend spoke.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 24_000
SAMPLE_WIDTH = 2  # bytes, s16le
FloatArray = npt.NDArray[np.float32]


def to_pcm16(samples: npt.ArrayLike) -> bytes:
    """Float samples in [-1, 1] → s16le bytes (clipped, so a loud engine cannot wrap around)."""
    data = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    return (data * 32767.0).astype("<i2").tobytes()


def from_pcm16(pcm: bytes) -> FloatArray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def seconds_of(pcm_bytes: int) -> float:
    return pcm_bytes / (SAMPLE_WIDTH * SAMPLE_RATE)


class LinearResampler:
    """Streaming linear-interpolation resampler: chunks in, chunks out, no seams.

    Linear interpolation is enough for the rates backends produce (espeak's 22.05 or 16 kHz up
    to 24 kHz); it needs no SciPy and keeps state across chunks, so it streams.
    """

    def __init__(self, source_rate: int, target_rate: int = SAMPLE_RATE) -> None:
        self.step = source_rate / target_rate
        self.passthrough = source_rate == target_rate
        self._pending: FloatArray = np.zeros(0, dtype=np.float32)
        self._pos = 0.0  # position of the next output sample, in ``_pending`` coordinates

    def feed(self, samples: FloatArray) -> FloatArray:
        if self.passthrough:
            return samples
        buf = np.concatenate([self._pending, samples])
        last = len(buf) - 1
        if last < self._pos:
            self._pending = buf
            return np.zeros(0, dtype=np.float32)
        count = int((last - self._pos) // self.step) + 1
        points = self._pos + np.arange(count) * self.step
        out: FloatArray = np.interp(points, np.arange(len(buf)), buf).astype(np.float32)
        next_pos = self._pos + count * self.step
        keep_from = int(next_pos)
        self._pending = buf[keep_from:]
        self._pos = next_pos - keep_from
        return out
