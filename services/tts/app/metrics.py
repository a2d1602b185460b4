"""Speech metrics, registered in the kit's per-app registry so ``GET /metrics`` serves them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from nexus_kit.metrics import LATENCY_BUCKETS


class TTSMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.generations = Counter(
            "nexus_tts_generations_total",
            "Speech generations, by backend, response format and outcome "
            "(ok, error, cancelled, busy).",
            ["backend", "format", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "nexus_tts_generation_duration_seconds",
            "Wall time from request to the end of synthesis, by backend.",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.first_audio = Histogram(
            "nexus_tts_time_to_first_audio_seconds",
            "Wall time until the backend produced its first PCM, by backend.",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.audio_seconds = Counter(
            "nexus_tts_audio_seconds_total",
            "Seconds of audio produced, by backend.",
            ["backend"],
            registry=registry,
        )
        self.input_chars = Counter(
            "nexus_tts_input_characters_total",
            "Characters of input text spoken, by backend.",
            ["backend"],
            registry=registry,
        )
