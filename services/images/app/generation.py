"""Admission, queueing, metrics and crash handling around one backend.

At most ``max_concurrency`` generations run; up to ``IMAGES_QUEUE_SIZE`` more wait their turn;
anything beyond is refused at once with a 429 instead of piling up behind a slow device.
"""

from __future__ import annotations

import asyncio
import time

from nexus_kit import NexusError, current_request_id, get_logger
from nexus_kit.tracing import current_span

from .backends import GenerationJob, ImageBackend
from .errors import GenerationFailedError, QueueFullError
from .metrics import ImagesMetrics

log = get_logger("images.generation")


class Generator:
    def __init__(self, backend: ImageBackend, metrics: ImagesMetrics, queue_size: int) -> None:
        self.backend = backend
        self.metrics = metrics
        self.capacity = backend.max_concurrency + queue_size
        self.pending = 0
        self._slots = asyncio.Semaphore(backend.max_concurrency)

    async def generate(self, job: GenerationJob) -> list[bytes]:
        name = self.backend.name
        if self.pending >= self.capacity:
            self.metrics.generations.labels(name, "rejected").inc()
            raise QueueFullError(self.pending)
        self.pending += 1
        self.metrics.pending.labels(name).inc()
        try:
            async with self._slots:
                return await self._run(job)
        finally:
            self.pending -= 1
            self.metrics.pending.labels(name).dec()

    async def _run(self, job: GenerationJob) -> list[bytes]:
        name = self.backend.name
        started = time.perf_counter()
        try:
            images = await self.backend.generate(job)
        except NexusError:
            self.metrics.generations.labels(name, "error").inc()
            raise
        except Exception:
            # A crash inside the backend: log it whole, answer a 500 without the details.
            self.metrics.generations.labels(name, "error").inc()
            log.exception("image generation crashed", backend=name)
            raise GenerationFailedError(current_request_id()) from None
        elapsed = time.perf_counter() - started
        self.metrics.duration.labels(name).observe(elapsed)
        current_span().set_attribute("nexus.images.generation_s", elapsed)  # without the queue
        self.metrics.generations.labels(name, "ok").inc()
        self.metrics.images.labels(name).inc(len(images))
        return images
