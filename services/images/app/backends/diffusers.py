"""The diffusers backend: a real Hugging Face text-to-image pipeline, on CUDA when there is one.

torch and diffusers are an optional extra (``requirements-diffusers.txt``), so they are
imported only here, inside the worker thread, through ``importlib``: importing them takes
seconds, and typing stays the same whether or not the extra is installed.

All work on the device runs in one single-thread executor: the load first, then generations
one at a time, so two requests never share a GPU's memory. The admission queue in front
(generation.py) bounds how many wait for it.
"""

from __future__ import annotations

import asyncio
import importlib
import io
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from app.settings import ImagesSettings
from nexus_kit import ServiceUnavailableError, get_logger

from . import BackendState, GenerationJob

log = get_logger("images.diffusers")


def model_id_of(source: str) -> str:
    """A hub id stays as it is; a local directory is advertised by its name."""
    path = Path(source)
    return path.name if path.is_absolute() or source.startswith(".") else source


class DiffusersBackend:
    name = "diffusers"
    max_concurrency = 1

    def __init__(self, settings: ImagesSettings) -> None:
        self.source = settings.images_model
        self.model_id = model_id_of(self.source)
        self.settings = settings
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="images-device")
        self._pipe: Any = None
        self._state = BackendState(False, "loading", f"diffusers: {self.source} not loaded yet")

    async def start(self) -> None:
        self._state = BackendState(False, "loading", f"diffusers: loading {self.source}")
        future = self._executor.submit(self._load)
        future.add_done_callback(self._on_loaded)

    async def close(self) -> None:
        # A load still running cannot be interrupted; do not wait for it here.
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._pipe = None
        self._state = BackendState(False, "stopped", "diffusers: stopped")

    def state(self) -> BackendState:
        return self._state

    async def probe(self) -> BackendState:
        return self._state

    async def generate(self, job: GenerationJob) -> list[bytes]:
        if self._pipe is None:
            raise ServiceUnavailableError(
                f"The image model is not available ({self._state.detail}).",
                code="model_not_ready", retry_after=5,
            )  # fmt: skip
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._render, job)

    def _load(self) -> tuple[Any, str]:
        torch = importlib.import_module("torch")
        pipelines = importlib.import_module("diffusers")
        device = _device(torch, self.settings.images_device)
        dtype = _dtype(torch, self.settings.images_dtype, device)
        pipe = pipelines.AutoPipelineForText2Image.from_pretrained(self.source, dtype=dtype)
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return pipe, device

    def _on_loaded(self, future: Future[tuple[Any, str]]) -> None:
        # Runs in the worker thread; plain attribute writes are atomic enough for a state flip.
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            log.error("model load failed", model=self.source, error=repr(error))
            self._state = BackendState(
                False, "failed", f"diffusers: loading {self.source} failed: {error!r}"
            )
            return
        self._pipe, device = future.result()
        log.info("model loaded", model=self.source, device=device)
        self._state = BackendState(True, "ready", f"diffusers: {self.source} on {device}")

    def _render(self, job: GenerationJob) -> list[bytes]:
        kwargs: dict[str, Any] = {"prompt": job.prompt, "width": job.width, "height": job.height}
        if self.settings.images_steps is not None:
            kwargs["num_inference_steps"] = self.settings.images_steps
        if self.settings.images_guidance_scale is not None:
            kwargs["guidance_scale"] = self.settings.images_guidance_scale
        # One image per call rather than a batch of n: n large images at once can exhaust
        # GPU memory, and one at a time costs little on a busy device.
        return [_png(self._pipe(**kwargs).images[0]) for _ in range(job.n)]


def _device(torch: Any, wanted: str) -> str:
    if wanted != "auto":
        return wanted
    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype(torch: Any, wanted: str, device: str) -> Any:
    if wanted == "auto":
        # Half precision halves GPU memory; CPUs compute float16 slowly or not at all.
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, wanted)


def _png(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
