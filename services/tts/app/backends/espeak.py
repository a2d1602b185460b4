"""The espeak backend: eSpeak NG's library from the ``espeakng-loader`` wheel, no program.

libespeak-ng speaks through ``app.backends.libespeak`` (ctypes): one synthesis at a time per
process, on a daemon thread, so the event loop never waits on it. Its synth callback hands each
~100 ms block to the request through a bounded hand-off: when the client reads slowly the
synthesis thread waits (backpressure, as a full pipe made the espeak-ng program wait), and when
the client hangs up the callback aborts the synthesis. espeak speaks at 22.05 kHz: the audio
is resampled to 24 kHz. Speed maps to words per minute; below espeak's floor of 80 wpm the rest
of the slowdown is a pitch-preserving time stretch.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import numpy as np

from app.audio import LinearResampler, to_pcm16
from app.backends import BackendError, SpeechJob, libespeak
from app.stretch import TimeStretch
from app.threads import in_daemon_thread

DEFAULT_VOICES: dict[str, str] = {
    "alloy": "en-us+f4",
    "ash": "en-us+m3",
    "ballad": "en-gb-x-rp+m4",
    "coral": "en-us+f2",
    "echo": "en-us+m2",
    "fable": "en-gb-x-rp+m1",
    "onyx": "en-us+m7",
    "nova": "en-us+f3",
    "sage": "en+f4",
    "shimmer": "en-us+f5",
    "verse": "en-us+m5",
    "marin": "en+f2",
    "cedar": "en-us+m6",
}
DEFAULT_WPM = 175
MIN_WPM, MAX_WPM = 80, 700  # espeak's floor; above 450 it speeds up with libsonic
AHEAD_BLOCKS = 8  # blocks (~100 ms each) synthesised ahead of what the client has taken
POLL_S = 0.1  # how often a waiting synthesis looks whether the client has gone


def rate_for(speed: float) -> tuple[int, float]:
    """espeak words per minute for ``speed``, and the stretch left for us to do (1 = none)."""
    wpm = round(DEFAULT_WPM * speed)
    if wpm < MIN_WPM:
        return MIN_WPM, DEFAULT_WPM * speed / MIN_WPM
    return min(wpm, MAX_WPM), 1.0


class Handoff:
    """Blocks from the synthesis thread to the request's coroutine, at most ``limit`` ahead."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = AHEAD_BLOCKS) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.room = threading.Semaphore(limit)
        self.stop = threading.Event()

    def _post(self, kind: str, value: Any) -> bool:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop closed: nobody is listening any more
            self.stop.set()
        return not self.stop.is_set()

    def put(self, samples: libespeak.Samples) -> bool:
        """Called by the synthesis thread; False tells espeak to abort."""
        while not self.room.acquire(timeout=POLL_S):
            if self.stop.is_set():
                return False
        return self._post("audio", samples)

    def done(self, error: BaseException | None) -> None:
        self._post("error", error) if error else self._post("done", None)

    async def get(self) -> tuple[str, Any]:
        item = await self.queue.get()
        if item[0] == "audio":
            self.room.release()
        return item


class EspeakBackend:
    name = "espeak"
    models: tuple[str, ...] = ("espeak-ng",)
    native_speed = True

    def __init__(
        self, voices: Mapping[str, str] | None = None, *, library: str = "", data: str = ""
    ) -> None:
        self.voices = {**DEFAULT_VOICES, **(voices or {})}
        self.library, self.data = library, data
        self.sample_rate = 0

    def unavailable_reason(self) -> str | None:
        if self.library and self.data:
            return None
        try:
            libespeak.wheel_paths()
        except (ImportError, RuntimeError) as exc:
            return f"espeakng-loader is not usable ({exc}); pip install espeakng-loader"
        return None

    async def load(self) -> None:
        def probe() -> int:
            rate = libespeak.initialize(self.library, self.data)
            for voice in sorted(set(self.voices.values())):
                libespeak.check_voice(voice)  # a bad override fails here, not per request
            return rate

        try:
            self.sample_rate = await in_daemon_thread(probe, "espeak-load")
        except libespeak.EspeakError as exc:
            raise BackendError(str(exc)) from None

    def _speak(self, job: SpeechJob, handoff: Handoff) -> None:
        wpm, _ = rate_for(job.speed)
        voice = self.voices.get(job.voice, DEFAULT_VOICES["alloy"])
        error: BaseException | None = None
        try:
            if not handoff.stop.is_set():  # the client may have left while we queued
                libespeak.speak(job.text, voice, wpm, handoff.put)
        except BaseException as exc:
            error = exc
        handoff.done(error)

    async def synthesize(self, job: SpeechJob) -> AsyncGenerator[bytes, None]:
        if not self.sample_rate:
            raise BackendError("espeak backend used before load()")
        handoff = Handoff(asyncio.get_running_loop())
        threading.Thread(
            target=self._speak, args=(job, handoff), name="espeak-synth", daemon=True
        ).start()
        resampler = LinearResampler(self.sample_rate)
        _, stretch_factor = rate_for(job.speed)
        stretch = TimeStretch(stretch_factor) if stretch_factor != 1.0 else None
        try:
            while True:
                kind, value = await handoff.get()
                if kind == "done":
                    break
                if kind == "error":
                    raise BackendError(f"espeak-ng failed: {value}")
                samples = resampler.feed(np.asarray(value, dtype=np.float32) / 32768.0)
                if stretch is not None:
                    samples = stretch.feed(samples)
                if len(samples):
                    yield to_pcm16(samples)
            if stretch is not None:
                yield to_pcm16(stretch.flush())
        finally:
            handoff.stop.set()  # the client went away, or we failed: abort the synthesis

    def voice_map(self) -> Mapping[str, str]:
        return dict(self.voices)

    async def aclose(self) -> None:
        return None
