"""What a speech backend is: something that turns text into a stream of PCM chunks.

Every backend yields s16le mono 24 kHz bytes (``app.audio``), resampling itself if its engine
runs at another rate, and yields them *as synthesis proceeds* so the service can stream.
Lifecycle, driven by ``app.engine``: ``unavailable_reason()`` is a cheap check that needs no I/O
(package installed? program on PATH?), ``load()`` does the slow part once (a model, a probe
run), ``synthesize()`` runs per request, ``aclose()`` at shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class BackendError(Exception):
    """Synthesis failed inside a backend (a crashed program, a model error)."""


class BackendBusyError(BackendError):
    """The backend's queue is full; the client should retry later."""


@dataclass(frozen=True)
class SpeechJob:
    text: str
    voice: str  # an OpenAI voice name; each backend maps it to one of its own
    speed: float = 1.0


@runtime_checkable
class TTSBackend(Protocol):
    name: str
    # Model ids this backend adds to the advertised ones (e.g. "pocket-tts").
    models: tuple[str, ...]
    # True when ``synthesize`` honours ``job.speed`` itself; otherwise the service stretches.
    native_speed: bool

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run here (no I/O), or None when it might."""
        ...

    async def load(self) -> None:
        """Get ready to speak (load a model, probe a program). Raises when it cannot."""
        ...

    def synthesize(self, job: SpeechJob) -> AsyncIterator[bytes]:
        """PCM chunks for ``job``; raises ``BackendError`` when synthesis fails."""
        ...

    def voice_map(self) -> Mapping[str, str]:
        """OpenAI voice → this backend's voice, for metadata and logs."""
        ...

    async def aclose(self) -> None: ...
