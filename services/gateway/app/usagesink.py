"""Durable delivery of usage records to the ``usage`` service, and the usage metrics.

``Accounting.finished`` runs when a metered request ends (usage.py): it counts the tokens in
the metrics, charges the key's token quotas (tokenlimit.py, in a task) and hands the record to
``Delivery``, which never blocks and never waits on the network:

- records wait in a bounded in-memory buffer (``USAGE_BUFFER_MAX``); a background task sends
  them in batches (``USAGE_BATCH_SIZE``, at least every ``USAGE_FLUSH_INTERVAL_S``) to the
  instance whose metadata advertises ``usage.records.ingest`` (found in the routing table:
  no configuration), with the gateway's ``NEXUS_INTERNAL_TOKEN``;
- a batch that cannot be delivered (service gone, 5xx, timeout, 401/403) is written to the
  spool directory (``USAGE_SPOOL_DIR``, one JSON file a batch, written atomically) and retried
  with backoff; spooled batches go first on every later cycle, and survive a restart;
- on shutdown the buffer is sent once more or spooled, so a SIGTERM loses nothing;
- when the buffer is full a record is dropped: ``nexus_usage_records_dropped_total`` and a
  warning (at most one every 10 s) say so. The request itself is never held up. The spool is
  bounded too (``USAGE_SPOOL_MAX_BYTES``): a batch that would pass it is dropped the same way
  (reason ``spool_full``);
- worker processes may share one spool directory: a batch is claimed by an atomic rename
  before it is sent, so no two send it and none is left behind (``Spool``).

Ingest is idempotent on each record's id, so a batch delivered twice (an answer lost, two
workers sharing a spool) counts once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
import time
from collections import deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from nexus_kit import get_logger

from .tokenlimit import TokenLimiter, TokenQuota
from .usage import Meter, Metering

if TYPE_CHECKING:
    from limits.aio.storage import Storage

    from .routing import RoutingTable
    from .settings import GatewaySettings

log = get_logger("nexus.gateway.usage")
INGEST_OPERATION = "usage.records.ingest"
_MAX_MODEL_LABELS = 200
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def default_spool_dir(service_name: str, port: int) -> Path:
    """Where records wait when ``USAGE_SPOOL_DIR`` is unset: one folder per gateway name and
    port, so a restart finds its own records and the worker processes of one gateway share them,
    while other gateways on the host (another stack, a test, a benchmark) never replay them."""
    return Path(tempfile.gettempdir()) / "nexus-usage-spool" / f"{service_name}-{port}"


class UsageMetrics:
    """OpenTelemetry GenAI names (``gen_ai.client.token.usage``, ``gen_ai.server.time_to_first
    _token``) under ``nexus_``, plus the delivery buffer's depth, spool and drops."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.tokens = Counter(
            "nexus_gen_ai_client_token_usage", "Tokens used, by requested model and direction.",
            ["gen_ai_request_model", "gen_ai_token_type"], registry=registry,
        )  # fmt: skip
        self.ttft = Histogram(
            "nexus_gen_ai_server_time_to_first_token_seconds",
            "Time from the request to the upstream's first body byte, by model.",
            ["gen_ai_request_model"], buckets=_TTFT_BUCKETS, registry=registry,
        )  # fmt: skip
        self.requests = Counter(
            "nexus_gen_ai_requests", "Metered requests by model and outcome.",
            ["gen_ai_request_model", "outcome"], registry=registry,
        )  # fmt: skip
        self.buffer = Gauge(
            "nexus_usage_buffer_records", "Usage records waiting in memory.", registry=registry
        )
        self.spool = Gauge(
            "nexus_usage_spool_batches", "Usage batches waiting on disk.", registry=registry
        )
        self.delivered = Counter(
            "nexus_usage_records_delivered", "Usage records accepted by the usage service.",
            registry=registry,
        )  # fmt: skip
        self.dropped = Counter(
            "nexus_usage_records_dropped",
            "Usage records lost: buffer_full, spool_full or rejected (400).",
            ["reason"], registry=registry,
        )  # fmt: skip
        self._models: set[str] = set()
        self._children: dict[tuple[Any, ...], Any] = {}

    def model_label(self, model: str | None) -> str:
        if not model:
            return "none"
        if model in self._models:
            return model
        if len(self._models) >= _MAX_MODEL_LABELS:
            return "other"  # model names come from clients: bound the label set
        self._models.add(model)
        return model

    def observe(self, record: dict[str, Any]) -> None:
        model = self.model_label(record["model"])
        self._child(self.requests, model, record["outcome"]).inc()
        if record["input_tokens"]:
            self._child(self.tokens, model, "input").inc(record["input_tokens"])
        if record["output_tokens"]:
            self._child(self.tokens, model, "output").inc(record["output_tokens"])
        if record["ttft_ms"] is not None and record["streamed"]:
            self._child(self.ttft, model).observe(record["ttft_ms"] / 1000)

    def _child(self, metric: Any, *labels: str) -> Any:
        """Label children cached: no ``labels()`` lookup per request once a child exists."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


RESCAN_S = 5.0  # how stale the spool size used for its bound may be


class Spool:
    """One file per undelivered batch; names sort by time; written atomically (tmp + rename).

    Bounded: a batch that would take the directory past ``max_bytes`` is not written (the
    caller counts it dropped). Several processes may share the directory (the gateway's
    workers, ADR 0012): a sender first **claims** a batch by renaming ``<name>.json`` to
    ``<name>.<pid>.claim`` (one rename wins; the others see it gone), deletes it once
    delivered and renames it back when not. A claim left by a process that died (its pid is
    gone, or the claim is older than ``claim_stale_s``) is put back for anyone to send.
    """

    def __init__(self, directory: Path, max_bytes: int = 0, claim_stale_s: float = 120.0) -> None:
        self.directory = directory
        self.max_bytes = max_bytes  # 0: no bound
        self.claim_stale_s = claim_stale_s
        self._held = _HELD  # this process's claims being sent now (any Spool of the process)
        self._known: tuple[float, int] | None = None  # (monotonic time of the scan, bytes)

    def write(self, records: list[dict[str, Any]]) -> bool:
        """Spool one batch; False (nothing written) when it would pass ``max_bytes``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        data = orjson.dumps(records)
        if self.max_bytes and self._bound_size() + len(data) > self.max_bytes:
            return False
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"
        tmp = self.directory / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.directory / f"{name}.json")
        if self._known is not None:
            self._known = (self._known[0], self._known[1] + len(data))
        return True

    def _bound_size(self) -> int:
        """The size the bound is checked against: a scan at most every ``RESCAN_S``, plus this
        process's own writes since. Scanning on every write cost O(files) per batch during an
        outage (a gateway under load spools a batch or two a second; issue 14's profile: ~7% of
        a core after a few hundred files). Between scans, other workers' writes and deliveries
        are not seen: the bound may be passed by a few seconds of the host's writes."""
        now = time.monotonic()
        if self._known is None or now - self._known[0] >= RESCAN_S:
            self._known = (now, self.size())
        return self._known[1]

    def size(self) -> int:
        """Bytes of batches on disk, claimed ones included."""
        total = 0
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.name.endswith((".json", ".claim")):
                        with contextlib.suppress(OSError):
                            total += entry.stat().st_size
        except OSError:
            return 0
        return total

    def batches(self) -> list[Path]:
        """Unclaimed batches, oldest first (stale claims put back first)."""
        try:
            self._recover()
            return sorted(self.directory.glob("*.json"))
        except OSError:
            return []

    def claim(self, path: Path) -> Path | None:
        """This process's hold on one batch, or None when another sender has it (or sent it)."""
        claimed = path.with_name(f"{path.stem}.{os.getpid()}.claim")
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            return None
        with contextlib.suppress(OSError):
            os.utime(claimed)  # the claim's age starts now
        self._held.add(claimed)
        return claimed

    def release(self, claimed: Path) -> None:
        """Not delivered: back in the spool for the next attempt (by anyone)."""
        self._held.discard(claimed)
        with contextlib.suppress(FileNotFoundError):
            os.rename(claimed, claimed.with_name(claimed.name.split(".", 1)[0] + ".json"))

    def _recover(self) -> None:
        now = time.time()
        for claimed in self.directory.glob("*.claim"):
            if claimed in self._held:
                continue
            try:
                pid = int(claimed.name.split(".")[1])
                age = now - claimed.stat().st_mtime
            except (ValueError, IndexError, OSError):
                continue
            if pid == os.getpid() or age > self.claim_stale_s or not _alive(pid):
                log.info("usage spool claim of a stopped sender put back", file=claimed.name)
                with contextlib.suppress(FileNotFoundError):  # another process may win the race
                    os.rename(claimed, claimed.with_name(claimed.name.split(".", 1)[0] + ".json"))

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]] | None:
        try:
            loaded = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None  # another worker delivered it
        except (OSError, orjson.JSONDecodeError):
            log.warning("unreadable usage spool file set aside", file=path.name)
            with contextlib.suppress(OSError):
                path.rename(path.with_name(path.name.split(".", 1)[0] + ".bad"))
            return None
        return loaded if isinstance(loaded, list) else None

    def remove(self, path: Path) -> None:
        self._held.discard(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


_HELD: set[Path] = set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):  # gone, or no pid at all
        return False
    except OSError:
        return True  # exists, another user's
    return True


class Delivery:
    def __init__(
        self,
        locate: Callable[[], str | None],
        client: Callable[[], httpx.AsyncClient],
        token: str | None,
        metrics: Callable[[], UsageMetrics],
        spool_dir: Path,
        *,
        batch_size: int = 500,
        interval_s: float = 1.0,
        buffer_max: int = 100_000,
        timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
        spool_max_bytes: int = 0,
    ) -> None:
        self.locate = locate
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.metrics = metrics
        self.spool = Spool(spool_dir, spool_max_bytes)
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.buffer_max = buffer_max
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self.buffer: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._backoff = 0.0
        self._warned_at = -1e9
        self._spool_warned_at = -1e9

    # --- the request path: never blocks -----------------------------------------------------
    def submit(self, record: dict[str, Any]) -> None:
        metrics = self.metrics()
        if len(self.buffer) >= self.buffer_max:
            metrics.dropped.labels("buffer_full").inc()
            now = time.monotonic()
            if now - self._warned_at >= 10:
                self._warned_at = now
                log.warning("usage buffer full: records dropped", buffer_max=self.buffer_max)
            return
        self.buffer.append(record)
        metrics.buffer.set(len(self.buffer))
        if len(self.buffer) >= self.batch_size:
            self._wake.set()

    # --- the background task ----------------------------------------------------------------
    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s + self._backoff)
            self._wake.clear()
            try:
                ok = await self.cycle()
            except Exception as exc:  # a bug here must not end delivery for good
                log.error("usage delivery cycle failed", error=repr(exc)[:200])
                ok = False
            self._backoff = 0.0 if ok else min(max(1.0, self._backoff * 2), self.max_backoff_s)

    async def cycle(self, *, final: bool = False) -> bool:
        """Spooled batches first, then the buffer; what cannot go now is spooled."""
        url = self.locate()
        ok = url is not None and (final or self._backoff == 0.0 or await self._probe(url))
        if ok and url is not None:
            ok = await self._drain_spool(url)
        while self.buffer:
            batch = [self.buffer.popleft() for _ in range(min(self.batch_size, len(self.buffer)))]
            self.metrics().buffer.set(len(self.buffer))
            if ok and url is not None and await self._send(url, batch):
                continue
            ok = False
            await self._spool(batch)
        return ok

    async def _probe(self, url: str) -> bool:
        """While backing off, one spooled batch (if any) tells whether the service is back."""
        return await self._drain_spool(url, limit=1)

    async def _drain_spool(self, url: str, limit: int | None = None) -> bool:
        paths = await asyncio.to_thread(self.spool.batches)
        self.metrics().spool.set(len(paths))
        for path in paths[:limit]:
            claimed = await asyncio.to_thread(self.spool.claim, path)
            if claimed is None:
                continue  # another worker is sending it (or has)
            sent = False
            try:
                records = await asyncio.to_thread(self.spool.read, claimed)
                sent = records is None or await self._send(url, records)
            finally:  # cancelled or failed: back in the spool, never lost
                if sent:
                    await asyncio.to_thread(self.spool.remove, claimed)
                else:
                    self.spool.release(claimed)
            if not sent:
                return False
        if limit is None:
            self.metrics().spool.set(0)
        return True

    async def _send(self, url: str, records: list[dict[str, Any]]) -> bool:
        try:
            resp = await self.client().post(
                url, content=orjson.dumps({"records": records}),
                headers={**self.headers, "Content-Type": "application/json"},
                timeout=self.timeout_s,
            )  # fmt: skip
        except httpx.HTTPError as exc:
            log.info("usage service unreachable; spooling", error=type(exc).__name__)
            return False
        if resp.status_code == 200:
            self.metrics().delivered.inc(len(records))
            return True
        if resp.status_code in (400, 413, 422):  # never acceptable: retrying cannot help
            log.error("usage batch rejected", status=resp.status_code, records=len(records),
                      detail=resp.text[:200])  # fmt: skip
            self.metrics().dropped.labels("rejected").inc(len(records))
            return True
        log.warning("usage service refused the batch; spooling", status=resp.status_code)
        return False

    async def _spool(self, batch: list[dict[str, Any]]) -> None:
        try:
            if await asyncio.to_thread(self.spool.write, batch):
                self.metrics().spool.inc()
            else:
                self._spool_full(len(batch))
        except OSError as exc:
            # No disk either: keep them in memory while there is room (drops are counted).
            log.error("usage spool not writable", error=str(exc)[:200])
            for record in batch:
                self.submit(record)

    async def close(self) -> None:
        """Last delivery attempt at shutdown; whatever does not go is on disk afterwards."""
        if not self.buffer:
            return
        self._backoff = 0.0
        try:
            await asyncio.wait_for(self.cycle(final=True), self.timeout_s + 1)
        except (TimeoutError, Exception):
            pass
        if self.buffer:
            batch = list(self.buffer)
            self.buffer.clear()
            if not await asyncio.to_thread(self.spool.write, batch):
                self._spool_full(len(batch))

    def _spool_full(self, records: int) -> None:
        """USAGE_SPOOL_MAX_BYTES reached: the batch is dropped, counted, said (once in 10 s)."""
        self.metrics().dropped.labels("spool_full").inc(records)
        now = time.monotonic()
        if now - self._spool_warned_at >= 10:
            self._spool_warned_at = now
            log.warning("usage spool full: records dropped", max_bytes=self.spool.max_bytes,
                        records=records)  # fmt: skip


class Accounting:
    """What happens when a metered request ends: metrics, token charge, a record delivered."""

    def __init__(
        self,
        delivery: Delivery,
        metrics: Callable[[], UsageMetrics],
        charge: Callable[[Any, int], Any] | None = None,
    ) -> None:
        self.delivery = delivery
        self.metrics = metrics
        self.charge = charge
        self._tasks: set[asyncio.Future[Any]] = set()
        self._pending: dict[str, tuple[Any, int]] = {}
        self._flushing: asyncio.Future[None] | None = None

    def finished(self, meter: Meter, status: int, client_gone: bool) -> None:
        record = meter.record(status, client_gone)
        try:
            self.metrics().observe(record)
        except Exception as exc:  # metrics must never cost a record
            log.warning("usage metrics failed", error=repr(exc)[:200])
        self.delivery.submit(record)
        tokens = meter.counts.total
        if self.charge is not None and tokens > 0 and meter.identity is not None:
            self._charge_soon(meter.identity, tokens)

    def _charge_soon(self, identity: Any, tokens: int) -> None:
        """Charges of one loop iteration are summed per key and sent by one task."""
        key = getattr(identity, "limit_key", None)
        if key is None:
            return
        pending = self._pending.get(key)
        self._pending[key] = (identity, tokens + (pending[1] if pending else 0))
        if self._flushing is None:
            self._flushing = asyncio.ensure_future(self._flush())
            self._tasks.add(self._flushing)
            self._flushing.add_done_callback(self._tasks.discard)

    async def _flush(self) -> None:
        pending, self._pending, self._flushing = self._pending, {}, None
        for identity, tokens in pending.values():
            charging = self.charge(identity, tokens) if self.charge is not None else None
            if charging is not None:
                await charging

    async def settle(self) -> None:
        """Wait for token charges still in flight (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


class UsageRuntime:
    """The gateway's usage accounting, in one object on ``GatewayState.usage``."""

    def __init__(
        self,
        settings: GatewaySettings,
        table: Callable[[], RoutingTable],
        client: Callable[[], httpx.AsyncClient],
    ) -> None:
        s = settings
        self.table = table
        self.metrics = UsageMetrics(CollectorRegistry())
        token = s.nexus_internal_token.get_secret_value() if s.nexus_internal_token else None
        spool = (
            Path(s.usage_spool_dir)
            if s.usage_spool_dir
            else default_spool_dir(s.service_name, s.service_port)
        )
        self.delivery = Delivery(
            self.ingest_url, client, token, lambda: self.metrics, spool,
            batch_size=s.usage_batch_size, interval_s=s.usage_flush_interval_s,
            buffer_max=s.usage_buffer_max, max_backoff_s=s.usage_retry_max_s,
            spool_max_bytes=s.usage_spool_max_bytes,
        )  # fmt: skip
        self.tokens: TokenLimiter | None = None
        self.accounting = Accounting(self.delivery, lambda: self.metrics, self._charge)
        self.metering = Metering(self.accounting.finished, enabled=s.usage_enabled)
        self._located: tuple[RoutingTable, str | None] | None = None

    def bind_metrics(self, registry: CollectorRegistry) -> None:
        self.metrics = UsageMetrics(registry)

    def token_limiter(self, storage: Storage) -> TokenLimiter:
        """Token quotas on the request limiter's own storage (one interface, as #14 shares it)."""
        self.tokens = TokenLimiter(storage)
        return self.tokens

    def _charge(self, identity: Any, tokens: int) -> Coroutine[Any, Any, None] | None:
        quota = TokenQuota.of(identity)
        if self.tokens is None or quota is None:
            return None
        return self.tokens.charge(identity.limit_key, quota, tokens)

    def ingest_url(self) -> str | None:
        """The usage service's ingest endpoint, from the current table (cached per table)."""
        table = self.table()
        if self._located is not None and self._located[0] is table:
            return self._located[1]
        found = None
        for instance in table.snapshot.instances:
            meta = instance.metadata
            if meta is None or instance.draining:
                continue
            for endpoint in meta.endpoints:
                if endpoint.operation_id == INGEST_OPERATION and endpoint.method == "POST":
                    found = instance.base_url + endpoint.path
                    break
            if found:
                break
        self._located = (table, found)
        return found

    def start(self) -> asyncio.Task[None]:
        return asyncio.create_task(self.delivery.run(), name="gateway-usage-delivery")

    async def close(self) -> None:
        await self.accounting.settle()
        await self.delivery.close()
