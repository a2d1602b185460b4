"""One speech request, from the backend's PCM to the bytes of the response.

The first PCM block is pulled before the response starts: a backend that fails at once (a
crashed program, a full queue) becomes a clean error envelope. After that the status line
is gone, so a failure cuts the stream (the client sees a truncated body) and is logged.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator

from opentelemetry.trace import StatusCode

from nexus_kit import NexusError, RateLimitError, current_request_id, get_logger
from nexus_kit.tracing import start_span

from .audio import from_pcm16, seconds_of, to_pcm16
from .backends import BackendBusyError, SpeechJob, TTSBackend
from .metrics import TTSMetrics
from .schemas import SpeechAudioDelta, SpeechAudioDone, SpeechUsage
from .stretch import TimeStretch
from .threads import closing

log = get_logger("tts.speech")


class SynthesisFailedError(NexusError):
    """500 envelope for a backend crash; the details go to the log, not the client."""


class Synthesis:
    def __init__(
        self, backend: TTSBackend, job: SpeechJob, response_format: str, metrics: TTSMetrics
    ) -> None:
        self.backend = backend
        self.job = job
        self.format = response_format
        self.metrics = metrics
        self.pcm_bytes = 0
        self._source: AsyncGenerator[bytes, None] = _as_generator(backend.synthesize(job))
        self._first = b""
        self._started = time.perf_counter()
        # Tracing on: one span from the request to the last sample (ended in _finish).
        attributes = {"nexus.tts.backend": backend.name, "nexus.tts.format": response_format}
        self._span = start_span("tts.synthesize", attributes)

    async def start(self) -> None:
        try:
            self._first = await anext(self._source, b"")
        except BackendBusyError as exc:
            await self._finish("busy")
            raise RateLimitError(f"The speech backend is busy: {exc}", retry_after=2) from None
        except Exception as exc:
            await self._finish("error")
            log.error("speech synthesis failed", backend=self.backend.name, error=repr(exc))
            raise SynthesisFailedError(
                f"Speech synthesis failed in the {self.backend.name} backend "
                f"(request id {current_request_id()})."
            ) from None
        self.metrics.first_audio.labels(self.backend.name).observe(self._elapsed())
        if self._span is not None:
            first_s = self._elapsed()
            self._span.add_event("first_audio", {"nexus.tts.time_to_first_audio_s": first_s})

    async def pcm(self) -> AsyncIterator[bytes]:
        """The PCM of the whole job (speed applied), with its outcome recorded."""
        outcome = "error"
        try:
            async for block in self._with_speed():
                self.pcm_bytes += len(block)
                yield block
            outcome = "ok"
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"  # the client went away
            raise
        except Exception as exc:
            log.error("speech stream cut", backend=self.backend.name, error=repr(exc))
            raise
        finally:
            await self._finish(outcome)

    async def _with_speed(self) -> AsyncIterator[bytes]:
        if self.backend.native_speed or self.job.speed == 1.0:
            yield self._first
            async for block in self._source:
                yield block
            return
        stretch = TimeStretch(self.job.speed)
        yield to_pcm16(stretch.feed(from_pcm16(self._first)))
        async for block in self._source:
            yield to_pcm16(stretch.feed(from_pcm16(block)))
        yield to_pcm16(stretch.flush())

    async def _finish(self, outcome: str) -> None:
        await self._source.aclose()
        name = self.backend.name
        self.metrics.generations.labels(name, self.format, outcome).inc()
        if outcome == "ok":
            self.metrics.duration.labels(name).observe(self._elapsed())
            self.metrics.audio_seconds.labels(name).inc(seconds_of(self.pcm_bytes))
            self.metrics.input_chars.labels(name).inc(len(self.job.text))
        if self._span is not None:
            self._span.set_attributes({"nexus.tts.outcome": outcome,
                                       "nexus.tts.audio_s": seconds_of(self.pcm_bytes),
                                       "nexus.tts.input_chars": len(self.job.text)})  # fmt: skip
            if outcome == "error":
                self._span.set_status(StatusCode.ERROR)
            self._span.end()
            self._span = None

    def _elapsed(self) -> float:
        return time.perf_counter() - self._started

    def usage(self) -> SpeechUsage:
        # Nexus does not bill tokens; these follow OpenAI's shape with honest estimates:
        # ~4 characters per text token, one audio token per 20 ms of audio.
        given = max(1, math.ceil(len(self.job.text) / 4))
        produced = math.ceil(seconds_of(self.pcm_bytes) * 50)
        total = given + produced
        return SpeechUsage(input_tokens=given, output_tokens=produced, total_tokens=total)


async def sse_events(audio: AsyncIterator[bytes], synthesis: Synthesis) -> AsyncIterator[bytes]:
    """``stream_format: sse``: a delta event per encoded chunk, then a done event with usage."""
    async with closing(audio) as chunks:
        async for chunk in chunks:
            delta = SpeechAudioDelta(audio=base64.b64encode(chunk).decode())
            yield b"data: " + delta.model_dump_json().encode() + b"\n\n"
    done = SpeechAudioDone(usage=synthesis.usage())
    yield b"data: " + done.model_dump_json().encode() + b"\n\n"


def _as_generator(source: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    """Backends may return any async iterator; a generator can be closed deterministically."""
    if isinstance(source, AsyncGenerator):
        return source

    async def wrapped() -> AsyncGenerator[bytes, None]:
        async for block in source:
            yield block

    return wrapped()
