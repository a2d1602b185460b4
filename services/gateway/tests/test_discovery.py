"""Discovery against an in-memory etcd: reads, watches, outages, compaction, metadata retries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from app.discovery import Discovery, Instance, Snapshot
from app.settings import GatewaySettings, static_backends_from
from nexus_kit import ServiceMetadata
from tests.support import FakeEtcd, eventually, metadata, registration, settings

PREFIX = "/nexus/services/"


class Recorder:
    """Collects published snapshots and answers metadata fetches as a test scripts them."""

    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []
        self.failures: dict[str, int] = {}  # base_url -> fetches to fail first
        self.fetched: list[str] = []
        self.models: dict[str, list[str]] = {}

    def publish(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)

    async def fetch(self, instance: Instance) -> ServiceMetadata:
        self.fetched.append(instance.base_url)
        if self.failures.get(instance.base_url, 0) > 0:
            self.failures[instance.base_url] -= 1
            raise ConnectionError("refused")
        return metadata(instance.service, models=self.models.get(instance.base_url, []))

    @property
    def last(self) -> Snapshot:
        return self.snapshots[-1]

    def keys(self) -> set[str]:
        return {i.key for i in self.last.instances}

    def ready(self, key: str) -> bool:
        return any(i.key == key and i.metadata is not None for i in self.last.instances)


@asynccontextmanager
async def running(
    store: FakeEtcd | None, config: GatewaySettings | None = None
) -> AsyncIterator[tuple[Discovery, Recorder]]:
    rec = Recorder()
    config = config or settings(etcd_endpoints="http://etcd.test:2379" if store else "")
    factory: Callable[[str], Any] = store.source if store else FakeEtcd().source
    discovery = Discovery(config, source_factory=factory, fetch=rec.fetch, on_change=rec.publish)
    discovery.start()
    try:
        yield discovery, rec
    finally:
        await discovery.stop()


async def test_first_read_then_watch_from_the_next_revision() -> None:
    store = FakeEtcd()
    store.put(PREFIX + "acme/acme-1", registration("acme", "http://a1"), lease=7)
    async with running(store) as (d, rec):
        await eventually_synced(d)
        (acme,) = rec.last.instances
        assert (acme.service, acme.instance_id, acme.lease, acme.metadata is not None) == (
            "acme", "acme-1", 7, True,
        )  # fmt: skip
        assert rec.last.synced
        assert store.watch_starts == [store.revision + 1]
        revision = store.put(PREFIX + "acme/acme-2", registration("acme", "http://a2"))
        await eventually(lambda: rec.ready(PREFIX + "acme/acme-2"))
        assert rec.last.revision == revision
        store.delete(PREFIX + "acme/acme-1")
        await eventually(lambda: rec.keys() == {PREFIX + "acme/acme-2"})


async def test_both_key_forms_and_garbage() -> None:
    store = FakeEtcd()
    store.put(PREFIX + "manual", registration("manual", "http://m"))
    store.put(PREFIX + "acme/acme-1", registration("acme", "http://a"))
    store.put(PREFIX + "too/deep/key", registration("x", "http://x"))
    store.put(PREFIX + "broken/b-1", b"{not json")
    store.put(PREFIX + "nourl/n-1", {"name": "nourl"})
    store.put(PREFIX + "gateway/gw-1", registration("gateway", "http://gw"))  # itself: ignored
    async with running(store) as (d, rec):
        await eventually_synced(d)
        by_key = {i.key: i for i in rec.last.instances}
        assert set(by_key) == {PREFIX + "manual", PREFIX + "acme/acme-1"}
        manual = by_key[PREFIX + "manual"]
        assert (manual.service, manual.instance_id, manual.metadata_url) == (
            "manual", "manual", "http://m/v1/metadata",
        )  # fmt: skip


async def test_draining_and_kind_come_from_the_value() -> None:
    store = FakeEtcd()
    key = PREFIX + "acme/acme-1"
    store.put(key, registration("acme", "http://a"))
    async with running(store) as (d, rec):
        await eventually_synced(d)
        store.put(key, registration("acme", "http://a", draining=True))
        await eventually(lambda: rec.last.instances[0].draining)
        assert rec.last.instances[0].metadata is not None  # kept while draining
        store.put(PREFIX + "ollama/o-1", registration("ollama", "http://o", kind="ollama"))
        await eventually(lambda: len(rec.last.instances) == 2)
        ollama = next(i for i in rec.last.instances if i.service == "ollama")
        assert ollama.kind == "ollama"
        assert ollama.metadata is not None  # synthesized endpoints at once


async def test_an_outage_resumes_from_the_last_applied_revision() -> None:
    store = FakeEtcd()
    store.put(PREFIX + "acme/acme-1", registration("acme", "http://a1"))
    async with running(store) as (d, rec):
        await eventually_synced(d)
        applied = d.revision
        store.outage()
        await eventually(lambda: d.etcd_error is not None, what="the outage to be noticed")
        assert rec.keys() == {PREFIX + "acme/acme-1"}  # the last table keeps serving
        assert d.revision == applied  # failed reconnects never advance it
        # Changes made while the gateway cannot see etcd (services still register).
        store.put(PREFIX + "acme/acme-2", registration("acme", "http://a2"))
        store.delete(PREFIX + "acme/acme-1")
        store.recover()
        await eventually(lambda: rec.keys() == {PREFIX + "acme/acme-2"})
        assert store.watch_starts[-1] == applied + 1
        assert store.reads == 1  # resumed, not re-read
        assert d.etcd_error is None


async def test_a_compacted_revision_triggers_a_full_read() -> None:
    store = FakeEtcd()
    store.put(PREFIX + "acme/acme-1", registration("acme", "http://a1"))
    store.put(PREFIX + "keep/k-1", registration("keep", "http://k"))
    store.put(PREFIX + "again/g-1", registration("again", "http://g"))
    async with running(store) as (d, rec):
        await eventually_synced(d)
        store.outage()
        await eventually(lambda: d.etcd_error is not None)
        store.delete(PREFIX + "acme/acme-1")
        store.put(PREFIX + "acme/acme-3", registration("acme", "http://a3"))
        store.put(PREFIX + "again/g-1", registration("again", "http://g"))  # re-registered
        store.compact()
        store.recover()
        expected = {PREFIX + "acme/acme-3", PREFIX + "keep/k-1", PREFIX + "again/g-1"}
        await eventually(lambda: rec.keys() == expected)
        await eventually(lambda: rec.fetched.count("http://g") == 2, what="a refetch")
        assert store.reads == 2
        assert d.revision == store.revision
        assert rec.fetched.count("http://k") == 1  # unchanged: not fetched again


async def test_a_store_that_lost_its_data_is_read_again() -> None:
    store = FakeEtcd()
    for n in range(5):
        store.put(PREFIX + f"acme/acme-{n}", registration("acme", f"http://a{n}"))
    async with running(store) as (d, rec):
        await eventually_synced(d)
        store.outage()
        await eventually(lambda: d.etcd_error is not None)
        # etcd recreated empty: revisions start again below what we had applied.
        store.kvs.clear()
        store.history.clear()
        store.revision = 1
        store.put(PREFIX + "fresh/f-1", registration("fresh", "http://f"))
        store.recover()
        await eventually(lambda: rec.keys() == {PREFIX + "fresh/f-1"})
        assert store.reads == 2


async def test_metadata_is_retried_until_the_instance_answers() -> None:
    store = FakeEtcd()
    store.put(PREFIX + "slow/s-1", registration("slow", "http://s"))
    async with running(store) as (d, rec):
        rec.failures["http://s"] = 2
        await eventually_synced(d)  # the first attempt counts for readiness, failed or not
        await eventually(lambda: rec.ready(PREFIX + "slow/s-1"), what="metadata after retries")
        assert rec.fetched.count("http://s") >= 3
        assert rec.last.instances[0].error is None


async def test_a_failing_instance_does_not_hold_readiness_and_shows_its_error() -> None:
    store = FakeEtcd()
    store.put(PREFIX + "dead/d-1", registration("dead", "http://d"))
    rec_failures = 10_000
    async with running(store) as (d, rec):
        rec.failures["http://d"] = rec_failures
        await eventually_synced(d)
        await eventually(lambda: rec.last.instances[0].error == "ConnectionError: refused")
        assert rec.last.instances[0].metadata is None


async def test_readiness_waits_for_etcd() -> None:
    store = FakeEtcd()
    store.outage()
    async with running(store) as (d, _):
        await eventually(lambda: d.etcd_error is not None)
        assert not d.synced.is_set()
        store.recover()
        await eventually_synced(d)


async def test_static_backends_are_instances_too() -> None:
    config = settings(
        static_backends={"tts": "http://t1, http://t2/"}, ollama_base_url="http://ollama:11434"
    )
    async with running(None, config) as (d, rec):
        await eventually_synced(d)
        found = {(i.service, i.base_url, i.kind, i.source) for i in rec.last.instances}
        assert found == {
            ("tts", "http://t1", "nexus", "env"),
            ("tts", "http://t2", "nexus", "env"),
            ("ollama", "http://ollama:11434", "ollama", "env"),
        }


async def test_ollama_models_are_refreshed() -> None:
    config = settings(ollama_base_url="http://o", ollama_refresh_s=0.02)
    async with running(None, config) as (d, rec):
        rec.models["http://o"] = ["a"]
        await eventually_synced(d)
        rec.models["http://o"] = ["a", "b"]

        def models() -> list[str]:
            meta = rec.last.instances[0].metadata
            return [m.id for m in meta.models] if meta else []

        await eventually(lambda: models() == ["a", "b"], what="the refreshed model list")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"TTS_BASE_URL": "http://t"}, {"tts": "http://t"}),
        ({"MY_SVC_BASE_URL": "http://m"}, {"my-svc": "http://m"}),
        ({"OPENAI_BASE_URL": "http://gw/v1", "IMAGES_PUBLIC_BASE_URL": "http://gw/x"}, {}),
        ({"OLLAMA_BASE_URL": "http://o", "EMPTY_BASE_URL": "", "BASE_URL": "x"}, {}),
    ],
)
def test_static_backends_from_env(environ: dict[str, str], expected: dict[str, str]) -> None:
    assert static_backends_from(environ) == expected


async def eventually_synced(d: Discovery) -> None:
    await eventually(d.synced.is_set, what="discovery to sync")
