"""Spans collected in process: the OpenTelemetry SDK's in-memory exporter behind the kit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from nexus_kit.tracing import TRACING


class Spans:
    """The finished spans, by name."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        names = [s.name for s in self.all()]
        assert len(found) == 1, f"{len(found)} spans named {name!r} in {names}"
        return found[0]


@contextmanager
def capture_spans() -> Iterator[Spans]:
    """Turn the kit's tracing on for the block, every span kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    TRACING.use(provider)
    try:
        yield Spans(exporter)
    finally:
        TRACING.clear()
        provider.shutdown()
