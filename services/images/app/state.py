"""Everything the images service holds for one app, at ``app.state.images``, and its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request

from nexus_kit import CheckResult, ModelInfo

from .backends import ImageBackend
from .files import FileStore
from .generation import Generator
from .metrics import ImagesMetrics
from .schemas import RESPONSE_FORMATS, SIZES
from .settings import ImagesSettings


@dataclass
class ImagesState:
    settings: ImagesSettings
    backend: ImageBackend
    generator: Generator
    files: FileStore

    @classmethod
    def create(
        cls, settings: ImagesSettings, backend: ImageBackend, metrics: ImagesMetrics
    ) -> ImagesState:
        """Wire the parts together; no I/O (that happens in ``lifespan``)."""
        return cls(
            settings=settings,
            backend=backend,
            generator=Generator(backend, metrics, settings.images_queue_size),
            files=FileStore(settings.images_files_dir, settings.images_url_ttl_s),
        )

    def model_ids(self) -> list[str]:
        return list(dict.fromkeys([*self.settings.model_aliases, self.backend.model_id]))

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=m, owned_by=f"nexus-images-{self.backend.name}")
                for m in self.model_ids()]  # fmt: skip

    def options(self) -> dict[str, Any]:
        state = self.backend.state()
        return {
            "sizes": list(SIZES),
            "default_size": self.settings.images_default_size,
            "response_formats": list(RESPONSE_FORMATS),
            "max_n": 10,
            "backend": self.backend.name,
            "backend_state": state.state,
            "backend_detail": state.detail,
        }

    async def check(self) -> CheckResult:
        state = await self.backend.probe()
        return CheckResult(state.ready, state.detail)


def images_state(request: Request) -> ImagesState:
    state: ImagesState = request.app.state.images
    return state


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ImagesState = app.state.images
    await state.files.open()
    await state.backend.start()
    try:
        yield
    finally:
        await state.backend.close()
        await state.files.close()
