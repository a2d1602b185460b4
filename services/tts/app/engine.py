"""Which backend speaks: chosen at startup, loaded in the background, reported by readyz.

``TTS_BACKEND=auto`` tries pocket-tts, espeak, stub in that order and keeps the first that
loads, so a machine without PyTorch or without the model weights still speaks; each one
skipped is reported with the reason. A named backend gets no fallback: when it cannot run,
readyz says why and speech requests get 503.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from nexus_kit import CheckResult, ServiceUnavailableError, get_logger

from .backends import TTSBackend
from .backends.espeak import EspeakBackend
from .backends.pocket_tts import PocketTTSBackend
from .backends.stub import StubBackend
from .settings import TTSSettings, parse_voice_map

Status = Literal["pending", "loading", "ready", "failed", "unavailable"]
AUTO_ORDER = ("pocket-tts", "espeak", "stub")
log = get_logger("tts.engine")


@dataclass
class Slot:
    backend: TTSBackend
    status: Status = "pending"
    detail: str | None = None

    def describe(self) -> str:
        text = f"{self.backend.name} {self.status}"
        return f"{text}: {self.detail}" if self.detail else text


class Engine:
    def __init__(self, backends: Sequence[TTSBackend], *, fallback: bool) -> None:
        if not backends:
            raise ValueError("at least one backend is needed")
        self.slots = [Slot(b) for b in backends]
        self.fallback = fallback
        self._index = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def current(self) -> Slot:
        return self.slots[self._index]

    @property
    def backend(self) -> TTSBackend:
        return self.current.backend

    def start(self) -> None:
        """Bring a backend up in the background: the app serves (and readyz answers) meanwhile."""
        self._task = asyncio.create_task(self._bring_up(), name="tts-backend-load")

    async def wait_settled(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _bring_up(self) -> None:
        for index, slot in enumerate(self.slots):
            self._index = index
            if await self._try(slot) or not self.fallback:
                return

    async def _try(self, slot: Slot) -> bool:
        reason = slot.backend.unavailable_reason()
        if reason is not None:
            slot.status, slot.detail = "unavailable", reason
            log.warning("tts backend unavailable", backend=slot.backend.name, reason=reason)
            return False
        slot.status = "loading"
        try:
            await slot.backend.load()
        except Exception as exc:
            slot.status, slot.detail = "failed", _short(exc)
            log.warning("tts backend failed to load", backend=slot.backend.name, error=slot.detail)
            return False
        slot.status, slot.detail = "ready", None
        log.info("tts backend ready", backend=slot.backend.name)
        return True

    def ready_backend(self) -> TTSBackend:
        """The backend to speak with now, or 503 saying why there is none."""
        slot = self.current
        if slot.status != "ready":
            raise ServiceUnavailableError(
                f"No speech backend is ready: {self.describe()}.", retry_after=5
            )
        return slot.backend

    def describe(self) -> str:
        """The backend in use and its state, then each one skipped and why."""
        skipped = [s.describe() for s in self.slots[: self._index]]
        text = self.current.describe()
        if self.current.status == "pending":
            text = f"{self.backend.name} starting"
        return f"{text} (skipped {'; '.join(skipped)})" if skipped else text

    async def check(self) -> CheckResult:
        return CheckResult(self.current.status == "ready", self.describe())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for slot in self.slots:
            await slot.backend.aclose()


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def backend_factories(settings: TTSSettings) -> dict[str, Callable[[], TTSBackend]]:
    return {
        "pocket-tts": lambda: PocketTTSBackend(
            language=settings.tts_pocket_language,
            config=settings.tts_pocket_config,
            voices=parse_voice_map(settings.tts_pocket_voices),
            quantize=settings.tts_pocket_quantize,
            max_queue=settings.tts_pocket_max_queue,
        ),
        "espeak": lambda: EspeakBackend(
            parse_voice_map(settings.tts_espeak_voices),
            library=settings.tts_espeak_library,
            data=settings.tts_espeak_data,
        ),
        "stub": StubBackend,
    }


def build_engine(settings: TTSSettings) -> Engine:
    factories = backend_factories(settings)
    if settings.tts_backend == "auto":
        return Engine([factories[name]() for name in AUTO_ORDER], fallback=True)
    return Engine([factories[settings.tts_backend]()], fallback=False)
