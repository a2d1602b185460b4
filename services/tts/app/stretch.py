"""Streaming WSOLA time stretch: changes the speed of speech without changing its pitch.

For backends with no speed control of their own (Pocket TTS) and for the speeds espeak cannot
reach natively. Waveform-similarity overlap-add: output frames are laid every ``hop`` samples
with a Hann window; each input frame is taken near ``hop * speed`` after the previous one, at
the offset whose waveform best continues what was just played (so no phasing clicks).
"""

from __future__ import annotations

import numpy as np

from .audio import SAMPLE_RATE, FloatArray

_FRAME = SAMPLE_RATE * 40 // 1000  # 40 ms: a few pitch periods of any voice
_HOP = _FRAME // 2
_TOLERANCE = SAMPLE_RATE * 8 // 1000  # search ±8 ms for the best-matching frame


class TimeStretch:
    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._window = np.hanning(_FRAME + 1)[:-1].astype(np.float32)  # periodic: sums to 1
        self._input: FloatArray = np.zeros(0, dtype=np.float32)
        self._offset = 0  # absolute index of ``_input[0]``
        self._nominal = 0.0  # absolute analysis position of the next frame
        self._previous: int | None = None  # absolute start of the last frame taken
        self._overlap: FloatArray = np.zeros(_HOP, dtype=np.float32)

    def feed(self, samples: FloatArray) -> FloatArray:
        self._input = np.concatenate([self._input, samples])
        return self._drain(final=False)

    def flush(self) -> FloatArray:
        # Pad so the last real samples get a full frame, then emit the pending overlap.
        self._input = np.concatenate([self._input, np.zeros(_FRAME + _TOLERANCE, np.float32)])
        end = self._offset + len(self._input) - _FRAME - _TOLERANCE
        out = self._drain(final=True, end=end)
        return np.concatenate([out, self._overlap])

    def _drain(self, *, final: bool, end: int | None = None) -> FloatArray:
        frames: list[FloatArray] = []
        while self._ready(final, end):
            start = self._choose_start()
            frame = self._slice(start, _FRAME) * self._window
            frames.append(self._overlap + frame[:_HOP])
            self._overlap = frame[_HOP:].copy()
            self._previous = start
            self._nominal += _HOP * self.speed
        self._forget()
        return np.concatenate(frames) if frames else np.zeros(0, dtype=np.float32)

    def _ready(self, final: bool, end: int | None) -> bool:
        available = self._offset + len(self._input)
        if final:
            return end is not None and self._nominal < end
        needed = int(self._nominal) + _TOLERANCE + _FRAME
        if self._previous is not None:
            needed = max(needed, self._previous + _HOP + _FRAME)
        return needed <= available

    def _choose_start(self) -> int:
        nominal = int(self._nominal)
        if self._previous is None:
            return nominal
        target = self._slice(self._previous + _HOP, _FRAME)
        low = max(self._offset, nominal - _TOLERANCE)
        region = self._slice(low, _FRAME + nominal + _TOLERANCE - low)
        windows = np.lib.stride_tricks.sliding_window_view(region, _FRAME)
        return low + int(np.argmax(windows @ target))

    def _slice(self, start: int, length: int) -> FloatArray:
        begin = start - self._offset
        return self._input[begin : begin + length]

    def _forget(self) -> None:
        # Keep what the next frame (and its similarity search) may still read.
        keep = int(self._nominal) - _TOLERANCE
        if self._previous is not None:
            keep = min(keep, self._previous + _HOP)
        drop = max(0, keep - self._offset)
        self._input = self._input[drop:]
        self._offset += drop
