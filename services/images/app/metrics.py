"""Generation metrics, registered in the kit's per-app registry so ``GET /metrics`` shows them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Image generation takes from milliseconds (stub) to minutes (large models on CPU).
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)


class ImagesMetrics:
    """Built unregistered, then ``register``ed into the app's registry once the app exists."""

    def __init__(self) -> None:
        self.generations = Counter(
            "nexus_images_generations_total",
            "Generation requests by backend and outcome (ok, error, rejected).",
            ["backend", "outcome"],
            registry=None,
        )
        self.images = Counter(
            "nexus_images_images_total",
            "Images produced, by backend.",
            ["backend"],
            registry=None,
        )
        self.duration = Histogram(
            "nexus_images_generation_duration_seconds",
            "Time a backend spent generating one request's images (queue wait excluded).",
            ["backend"],
            buckets=DURATION_BUCKETS,
            registry=None,
        )
        self.pending = Gauge(
            "nexus_images_pending_generations",
            "Generations running or waiting in the queue.",
            ["backend"],
            registry=None,
        )

    def register(self, registry: CollectorRegistry) -> None:
        for collector in (self.generations, self.images, self.duration, self.pending):
            registry.register(collector)
