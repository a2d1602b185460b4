"""Image backends: one Protocol, three implementations chosen by ``IMAGES_BACKEND``.

    stub       deterministic placeholder PNGs drawn with Pillow (default; runs anywhere)
    diffusers  a Hugging Face diffusers text-to-image pipeline (optional extra: torch)
    a1111      an AUTOMATIC1111 / Forge web UI, through its ``/sdapi/v1/txt2img`` API

A backend returns finished PNG bytes; routes, queueing, metrics and files live elsewhere.
Expected failures are raised as ``nexus_kit`` errors (busy, loading, upstream down); anything
else counts as a crash and becomes a 500 without details.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from app.settings import ImagesSettings


@dataclass(frozen=True)
class GenerationJob:
    prompt: str
    width: int
    height: int
    n: int = 1
    quality: str | None = None
    style: str | None = None


@dataclass(frozen=True)
class BackendState:
    """What readyz and metadata say about the backend, in words an operator understands."""

    ready: bool
    state: str  # ready | loading | failed | unreachable | stopped
    detail: str


class ImageBackend(Protocol):
    name: str
    model_id: str
    # Generations run at once; the rest wait in the bounded queue (429 when full).
    max_concurrency: int

    async def start(self) -> None:
        """Begin whatever loading the backend needs; must return without waiting for it."""

    async def close(self) -> None: ...

    def state(self) -> BackendState:
        """The last known state, without I/O (metadata is built synchronously)."""

    async def probe(self) -> BackendState:
        """A fresh state for readyz (may ask an upstream)."""

    async def generate(self, job: GenerationJob) -> list[bytes]:
        """``job.n`` PNG images of ``job.width`` x ``job.height``."""


def make_backend(settings: ImagesSettings) -> ImageBackend:
    # Imported lazily: the diffusers module must not pull torch into a stub service.
    if settings.images_backend == "diffusers":
        from .diffusers import DiffusersBackend

        return DiffusersBackend(settings)
    if settings.images_backend == "a1111":
        from .a1111 import A1111Backend

        return A1111Backend(settings)
    from .stub import StubBackend

    return StubBackend()
