"""One metrics view over every gateway worker: the supervisor's ``:8801`` sums the workers'.

Each worker serves its own registry on a unix socket (``MetricsServer(path=...)``); on every
scrape the supervisor reads them all and adds the samples up by name and labels: counters and
histograms (buckets, sums, counts) add, and so do gauges (requests in flight), except those
that describe a shared fact, where the largest wins (``MAX_GAUGES``: the route count, an
upstream's health as any worker sees it). ``*_created`` timestamps keep the earliest. The
supervisor adds its own: workers alive, restarts, and requests per worker (to see balance).

An aggregating endpoint rather than prometheus_client's multiprocess mode: the gateway's live
gauges are computed at scrape time from each worker's state (no files to write per request),
and the request path keeps its in-process counters (docs/adr/0012-gateway-workers.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from .metrics import MetricsServer

MAX_GAUGES = frozenset({"nexus_gateway_routes", "nexus_gateway_upstream_healthy"})
REQUESTS = "nexus_http_requests_total"
FETCH_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class WorkerView:
    index: int
    socket: str
    alive: bool


def merge(texts: Iterable[str]) -> list[Metric]:
    """Families of several Prometheus text expositions, samples added up (see module doc)."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
                values[family.name] = {}
            largest = family.type == "gauge" and family.name in MAX_GAUGES
            samples = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                old = samples.get(key)
                if old is None:
                    samples[key] = sample.value
                elif sample.name.endswith("_created"):
                    samples[key] = min(old, sample.value)
                elif largest:
                    samples[key] = max(old, sample.value)
                else:
                    samples[key] = old + sample.value
    for name, merged in families.items():
        for (sample_name, labels), value in values[name].items():
            merged.add_sample(sample_name, dict(labels), value)
    return list(families.values())


def requests_served(text: str) -> float:
    """A worker's ``nexus_http_requests_total``, all labels together."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == REQUESTS:
                total += sample.value
    return total


class _Static(Collector):
    def __init__(self, metrics: Sequence[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


async def fetch_worker(path: str) -> str:
    """One worker's exposition over its unix socket (``MetricsServer`` closes after one)."""
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), FETCH_TIMEOUT_S)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: worker\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), FETCH_TIMEOUT_S)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise OSError(f"worker metrics answered {head[:40]!r}")
    return body.decode()


class AggregateServer(MetricsServer):
    """The supervisor's metrics port: the workers' sum plus the supervisor's own gauges."""

    def __init__(self, host: str, port: int, workers: Callable[[], list[WorkerView]],
                 restarts: Callable[[], int]) -> None:  # fmt: skip
        super().__init__(CollectorRegistry(), host, port)
        self.workers = workers
        self.restarts = restarts

    async def body(self) -> bytes:
        views = self.workers()
        texts = await asyncio.gather(
            *(fetch_worker(v.socket) for v in views if v.alive), return_exceptions=True
        )
        alive = [v for v in views if v.alive]
        read = {v.index: t for v, t in zip(alive, texts, strict=True) if isinstance(t, str)}
        metrics = merge(read.values())
        up = GaugeMetricFamily(
            "nexus_gateway_worker_up", "1 while the worker runs and answers.", labels=["worker"]
        )
        served = CounterMetricFamily(
            "nexus_gateway_worker_requests",
            "Requests each worker has served since it started (balance across workers).",
            labels=["worker"],
        )
        for view in views:
            up.add_metric([str(view.index)], 1.0 if view.index in read else 0.0)
            if view.index in read:
                served.add_metric([str(view.index)], requests_served(read[view.index]))
        metrics += [
            GaugeMetricFamily("nexus_gateway_workers", "Worker processes running.", len(read)),
            CounterMetricFamily(
                "nexus_gateway_worker_restarts", "Workers replaced after exiting.", self.restarts()
            ),
            up,
            served,
        ]
        registry = CollectorRegistry()
        registry.register(_Static(metrics))
        return generate_latest(registry)
