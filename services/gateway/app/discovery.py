"""Discovery: etcd registrations and static backends become an immutable ``Snapshot``.

The etcd prefix is read once, then watched from the next revision. Every change is applied to
a private dict of ``Instance`` entries and published as a new snapshot (with the revision it
reflects) to one callback, which builds and swaps the routing table. Request handlers never
wait on any of this.

Failure handling, level-triggered where it matters:

- etcd unreachable: the last snapshot keeps serving; the loop reconnects with backoff (next
  endpoint each try) and resumes the watch from the last revision it *applied*, so nothing in
  between is lost. A compacted revision (``Compacted``) or a store whose revision went
  backwards (etcd recreated without its data) triggers a full re-read instead.
- ``/v1/metadata`` of an instance: fetched on each put, each try bounded by
  ``DISCOVERY_METADATA_TIMEOUT_S`` and retried with backoff while the key exists. Until it
  answers, the instance has no endpoints (Ollama instances get synthesized ones at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Literal

import httpx
import orjson
from pydantic import ValidationError

from nexus_kit import ServiceMetadata, get_logger
from nexus_kit.metadata import Registration
from nexus_kit.tracing import outgoing_headers

from . import openai_upstream
from .etcd import Change, Compacted, EtcdSource, KeyValue
from .grace import LeaseGrace, Probe
from .kinds import synthesized
from .settings import GatewaySettings

log = get_logger("nexus.gateway.discovery")

Kind = Literal["nexus", "ollama", "openai"]
Source = Literal["etcd", "env"]
FIRST_RETRY_S = 0.1  # a service may put its key a moment before its socket listens
HEARTBEAT_MISSES = 3  # unanswered heartbeat reads before the watch is reopened


@dataclass(frozen=True, slots=True)
class Instance:
    """One upstream instance as discovery knows it (``metadata`` None: not fetched yet)."""

    key: str  # the etcd key, or ``env:<name>#<n>`` for a static backend
    service: str
    instance_id: str
    base_url: str
    metadata_url: str
    kind: Kind = "nexus"
    source: Source = "etcd"
    lease: int = 0
    create_revision: int = 0
    revision: int = 0  # etcd mod revision of the key
    draining: bool = False
    metadata: ServiceMetadata | None = None
    error: str | None = None
    seen_at: float = 0.0  # wall clock of the last etcd event or metadata answer
    expired_at: float | None = None  # wall clock its lease expired; kept under grace.py's rules
    credential_env: str | None = None  # kind openai: the env var holding the upstream key
    paths: tuple[str, ...] | None = None  # kind openai: the endpoints (None: the default set)


@dataclass(frozen=True, slots=True)
class Snapshot:
    revision: int
    instances: tuple[Instance, ...]
    synced: bool  # first full etcd read and first metadata round done


EMPTY = Snapshot(0, (), False)


Fetch = Callable[["Instance"], Awaitable[ServiceMetadata]]


# -- the loop ---------------------------------------------------------------------------


class Discovery:
    def __init__(
        self,
        settings: GatewaySettings,
        *,
        source_factory: Callable[[str], EtcdSource],
        fetch: Fetch,
        on_change: Callable[[Snapshot], None],
        on_event: Callable[[str], None] = lambda _: None,
        probe: Probe | None = None,
    ) -> None:
        self.settings = settings
        self.prefix = settings.nexus_etcd_prefix
        self._source_factory = source_factory
        self._fetch = fetch
        self._on_change = on_change
        self._on_event = on_event
        self._entries: dict[str, Instance] = {}
        self._fetches: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._initial: set[str] | None = None  # keys whose first fetch is pending
        self.revision = 0
        self.etcd_synced = not settings.etcd_endpoint_list
        self.etcd_error: str | None = None
        self.etcd_last_ok: float | None = None  # wall clock of the last answer from etcd
        self.synced = asyncio.Event()
        s = settings
        self._grace = LeaseGrace(s.discovery_lease_grace_s, s.discovery_grace_probe_s, probe,
                                 self._entries.get, self._expired)  # fmt: skip

    # lifecycle

    def start(self) -> None:
        self._initial = set()
        for entry in static_instances(self.settings):
            self._upsert(entry)
        if self.settings.etcd_endpoint_list:
            self._tasks.append(asyncio.create_task(self._watch_loop(), name="gateway-discovery"))
        self._tasks.append(asyncio.create_task(self._refresh_loop(), name="gateway-ollama"))
        self._check_synced()
        self._publish()

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._fetches.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._fetches.clear()
        await self._grace.stop()

    def snapshot(self) -> Snapshot:
        ordered = tuple(sorted(self._entries.values(), key=lambda i: i.key))
        return Snapshot(self.revision, ordered, self.synced.is_set())

    def refresh(self, key: str) -> None:
        """Fetch an instance's metadata again (Ollama's models after it came back)."""
        if key in self._entries and key not in self._fetches:
            self._spawn_fetch(key)

    # etcd

    async def _watch_loop(self) -> None:
        endpoints = self.settings.etcd_endpoint_list
        delay, attempt, full = FIRST_RETRY_S, 0, True
        while True:
            source = self._source_factory(endpoints[attempt % len(endpoints)])
            try:
                full = full or await self._store_was_reset(source)
                if full:
                    await self._full_read(source)
                    full = False
                delay = FIRST_RETRY_S
                self._etcd_answered()
                await self._follow(source)
                raise ConnectionError("watch stream ended")
            except asyncio.CancelledError:
                raise
            except Compacted:
                log.warning("watch revision compacted; re-reading", revision=self.revision)
                self._on_event("compacted")
                full = True
            except Exception as exc:
                self._lost_etcd(exc, delay)
                attempt += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.etcd_reconnect_max_s)
            finally:
                await source.close()

    async def _follow(self, source: EtcdSource) -> None:
        """Apply the watch; a heartbeat read proves etcd still answers (a frozen etcd keeps the
        watch open and silent), and after ``HEARTBEAT_MISSES`` misses the watch is reopened."""
        every = self.settings.etcd_heartbeat_s
        watch = asyncio.ensure_future(self._consume(source))
        tasks = {watch}
        if every > 0:
            tasks.add(asyncio.ensure_future(self._heartbeat(source, every)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            done.pop().result()  # raises what ended it
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _consume(self, source: EtcdSource) -> None:
        async for change in source.watch(self.prefix, self.revision + 1):
            self._apply(change)
            self._etcd_answered()

    async def _heartbeat(self, source: EtcdSource, every: float) -> None:
        misses = 0
        while True:
            await asyncio.sleep(every)
            try:
                await asyncio.wait_for(source.current_revision(self.prefix), every)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                misses += 1
                self._etcd_silent(exc, every)
                if misses >= HEARTBEAT_MISSES:
                    raise ConnectionError(f"etcd did not answer {misses} reads") from None
            else:
                misses = 0
                self._etcd_answered()

    def _etcd_answered(self) -> None:
        if self.etcd_error is not None:
            log.info("etcd answers again", revision=self.revision)
        self.etcd_error, self.etcd_last_ok = None, time.time()

    def _etcd_silent(self, exc: Exception, every: float) -> None:
        """The watch is open but etcd does not answer: frozen, partitioned or without quorum."""
        error = f"etcd did not answer a read within {every:g} s ({describe_error(exc)})"
        if self.etcd_error is None:
            log.warning("etcd is not answering; serving the last table", error=error)
            self._on_event("stale")
        self.etcd_error = error

    def _lost_etcd(self, exc: Exception, delay: float) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if error != self.etcd_error:
            log.warning("etcd unavailable; serving the last table", error=error, retry_s=delay)
        self.etcd_error = error
        self._on_event("reconnect")

    async def _store_was_reset(self, source: EtcdSource) -> bool:
        """etcd recreated without its data restarts revisions: resuming would wait forever."""
        if self.revision == 0:
            return True
        return await source.current_revision(self.prefix) < self.revision

    async def _full_read(self, source: EtcdSource) -> None:
        revision, kvs = await source.read(self.prefix)
        present = {kv.key for kv in kvs}
        for key in [k for k, e in self._entries.items() if e.source == "etcd" and k not in present]:
            self._vanished(key)
        for kv in kvs:
            self._put(kv, refetch=False)
        self.revision = revision
        self._on_event("resync")
        log.info("etcd read", revision=revision, keys=len(kvs))
        if not self.etcd_synced:
            self.etcd_synced = True
            self._check_synced()
        self._publish()

    def _apply(self, change: Change) -> None:
        if change.kind == "put":
            self._put(change.kv, refetch=True)
        else:
            self._vanished(change.kv.key)
        self._on_event(change.kind)
        self.revision = max(self.revision, change.kv.mod_revision)
        self._publish()

    def _put(self, kv: KeyValue, *, refetch: bool) -> None:
        """Apply a key's value; ``refetch=False`` (a re-read) fetches only what changed."""
        entry = parse_registration(self.prefix, kv)
        if entry is None or entry.service == self.settings.service_name:
            self._remove(kv.key)  # unusable value, or the gateway itself
            return
        old = self._entries.get(kv.key)
        if old is None or not _same_upstream(old, entry):
            self._upsert(entry)
            return
        # Keep serving the known metadata while it is fetched again.
        entry = replace(entry, metadata=old.metadata, error=old.error)
        self._upsert(entry, refetch=refetch or old.revision != entry.revision)

    def _vanished(self, key: str) -> None:
        """The key left etcd: a deregistration goes at once, a lease expiry gets a grace."""
        entry = self._entries.get(key)
        if entry is None or entry.expired_at is not None:
            return
        if not self._grace.applies_to(entry):
            self._remove(key)
            return
        log.warning("lease expired; kept while its probe passes", instance=key,
                    grace_s=self.settings.discovery_lease_grace_s)  # fmt: skip
        self._entries[key] = replace(entry, expired_at=time.time())
        self._on_event("lease_grace")
        self._grace.start(key)

    def _expired(self, key: str, reason: str) -> None:
        self._remove(key)
        self._publish()

    def _remove(self, key: str) -> None:
        self._grace.cancel(key)
        if self._entries.pop(key, None) is not None:
            log.info("instance gone", instance=key)
        task = self._fetches.pop(key, None)
        if task is not None:
            task.cancel()
        if self._initial is not None:
            self._initial.discard(key)
            self._check_synced()

    # metadata

    def _upsert(self, entry: Instance, *, refetch: bool = True) -> None:
        kind = synthesized(entry.kind)
        if entry.metadata is None and kind is not None:
            entry = replace(entry, metadata=kind.placeholder(entry))
        self._grace.cancel(entry.key)  # a put (re-registration) ends any lease grace
        self._entries[entry.key] = entry
        if refetch:
            if self._initial is not None and not self.synced.is_set():
                self._initial.add(entry.key)  # readiness waits for its first answer
            self._spawn_fetch(entry.key)

    def _spawn_fetch(self, key: str) -> None:
        previous = self._fetches.pop(key, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(self._fetch_loop(key), name=f"gateway-metadata-{key}")
        self._fetches[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._fetches.get(key) is done:
                del self._fetches[key]

        task.add_done_callback(forget)

    async def _fetch_loop(self, key: str) -> None:
        delay = FIRST_RETRY_S
        while (entry := self._entries.get(key)) is not None:
            try:
                metadata = await asyncio.wait_for(
                    self._fetch(entry), self.settings.discovery_metadata_timeout_s
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._fetch_failed(key, describe_error(exc), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.discovery_retry_max_s)
                continue
            self._fetched(key, metadata)
            return

    def _fetched(self, key: str, metadata: ServiceMetadata) -> None:
        entry = self._entries[key]
        self._entries[key] = replace(entry, metadata=metadata, error=None, seen_at=time.time())
        if entry.error is not None or entry.metadata is None:
            log.info("instance ready", instance=key, url=entry.base_url)
        self._on_event("metadata_ok")
        self._first_attempt_done(key)
        self._publish()

    def _fetch_failed(self, key: str, error: str, delay: float) -> None:
        entry = self._entries[key]
        if entry.error != error:
            log.warning("metadata fetch failed; retrying", instance=key, error=error, retry_s=delay)
            self._entries[key] = replace(entry, error=error)
            self._publish()
        self._on_event("metadata_error")
        self._first_attempt_done(key)

    # readiness and publishing

    def _first_attempt_done(self, key: str) -> None:
        if self._initial is not None and key in self._initial:
            self._initial.discard(key)
            self._check_synced()

    def _check_synced(self) -> None:
        if self.etcd_synced and self._initial is not None and not self._initial:
            if not self.synced.is_set():
                log.info("discovery synced", revision=self.revision, instances=len(self._entries))
            self.synced.set()

    def _publish(self) -> None:
        self._on_change(self.snapshot())

    async def _refresh_loop(self) -> None:
        """Synthesized model lists (``ollama pull``, a vLLM restart) change: re-read them."""
        while True:
            await asyncio.sleep(self.settings.ollama_refresh_s)
            for key, entry in list(self._entries.items()):
                if entry.kind != "nexus":
                    self.refresh(key)


# -- pure helpers -----------------------------------------------------------------------


def parse_registration(prefix: str, kv: KeyValue) -> Instance | None:
    """``<prefix><name>/<id>`` or ``<prefix><name>`` with a Registration JSON value."""
    parts = kv.key[len(prefix) :].split("/") if kv.key.startswith(prefix) else []
    if len(parts) not in (1, 2) or not all(parts):
        return None
    try:
        reg = Registration.model_validate(orjson.loads(kv.value))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        log.warning("ignoring unreadable registration", instance=kv.key, error=str(exc)[:200])
        return None
    name = parts[0]
    instance_id = parts[1] if len(parts) == 2 else (reg.instance_id or name)
    base_url = reg.base_url.rstrip("/")
    if reg.kind == "openai":
        base_url = openai_upstream.root_url(base_url)
    return Instance(
        key=kv.key,
        service=name,
        instance_id=instance_id,
        base_url=base_url,
        metadata_url=reg.metadata_url or f"{base_url}/v1/metadata",
        kind=reg.kind,
        lease=kv.lease,
        create_revision=kv.create_revision,
        revision=kv.mod_revision,
        draining=reg.draining,
        seen_at=time.time(),
        credential_env=reg.api_key_env if reg.kind == "openai" else None,
        paths=tuple(reg.paths) if reg.kind == "openai" and reg.paths is not None else None,
    )


def static_instances(settings: GatewaySettings) -> list[Instance]:
    """Backends named by ``<NAME>_BASE_URL`` (and ``OLLAMA_BASE_URL``); never leave."""
    found = []
    for name, (kind, urls) in sorted(settings.backend_urls().items()):
        for n, url in enumerate(urls):
            found.append(
                Instance(
                    key=f"env:{name}#{n}",
                    service=name,
                    instance_id=f"{name}-env-{n}",
                    base_url=url,
                    metadata_url=f"{url}/v1/metadata",
                    kind=kind,
                    source="env",
                    seen_at=time.time(),
                    credential_env=openai_upstream.key_env_for(name) if kind == "openai" else None,
                )
            )
    return found


def _same_upstream(a: Instance, b: Instance) -> bool:
    return (a.base_url, a.metadata_url, a.kind, a.credential_env, a.paths) == (
        b.base_url, b.metadata_url, b.kind, b.credential_env, b.paths
    )


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


async def fetch_metadata(http: httpx.AsyncClient, instance: Instance) -> ServiceMetadata:
    """The instance's discovery document (synthesized for Ollama and OpenAI-compatible servers)."""
    kind = synthesized(instance.kind)
    if kind is not None:
        return await kind.fetch_metadata(http, instance)
    resp = await http.get(instance.metadata_url, headers=outgoing_headers())
    resp.raise_for_status()
    return ServiceMetadata.model_validate_json(resp.content)
