"""etcd registration: the instance's key on a lease, kept alive, re-created after any outage.

Key ``<prefix><name>/<instance-id>``, value the JSON ``Registration`` of metadata.py. The loop
never raises into the service: while etcd is away it retries with backoff and ``/readyz``
reports the registry as a non-critical failing check.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import aetcd
import orjson

from .etcd import close_quietly, make_client
from .health import CheckResult
from .logging import get_logger
from .metadata import Registration
from .settings import ServiceSettings

log = get_logger("nexus.registration")


class Registrar:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.key = f"{settings.nexus_etcd_prefix}{settings.service_name}/{settings.instance_id}"
        self.draining = False
        self.registered = False
        self.last_error: str | None = None
        self._client: aetcd.Client | None = None
        self._lease: aetcd.Lease | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._endpoint_index = 0

    @property
    def enabled(self) -> bool:
        return bool(self.settings.etcd_endpoint_list)

    def value(self) -> bytes:
        base = self.settings.advertise_url
        reg = Registration(
            name=self.settings.service_name,
            instance_id=self.settings.instance_id,
            base_url=base,
            metadata_url=f"{base}/v1/metadata",
            version=self.settings.service_version,
            draining=self.draining,
        )
        return orjson.dumps(reg.model_dump(exclude_none=True))

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="nexus-registration")

    async def mark_draining(self) -> None:
        """Tell the gateway to send nothing new here; in-flight requests still finish."""
        self.draining = True
        if self._client is not None and self._lease is not None:
            try:
                await self._client.put(self.key.encode(), self.value(), lease=self._lease)
            except Exception as exc:
                log.warning("could not mark draining in etcd", error=str(exc))

    async def stop(self) -> None:
        """Delete the key and revoke the lease (clean shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._client is not None:
            try:
                if not self.draining:  # goodbye first: the gateway then drops it at once
                    await self.mark_draining()  # (a bare delete reads as a lease expiry)
                await self._client.delete(self.key.encode())
                if self._lease is not None:
                    await self._lease.revoke()
                log.info("deregistered", key=self.key)
            except Exception as exc:
                log.warning("could not deregister; the lease will expire", error=str(exc))
        await close_quietly(self._client)
        self._client = None
        self.registered = False

    async def check(self) -> CheckResult:
        if not self.enabled:
            return CheckResult(True, "registration disabled (ETCD_ENDPOINTS unset)")
        if self.registered:
            return CheckResult(True, self.key)
        return CheckResult(False, self.last_error or "not registered yet")

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._register()
                backoff = 0.2
                await self._keep_alive()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.registered = False
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("etcd registration failed; retrying", error=self.last_error)
                await close_quietly(self._client)
                self._client, self._lease = None, None
                self._endpoint_index += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 3.0)

    async def _register(self) -> None:
        endpoints = self.settings.etcd_endpoint_list
        endpoint = endpoints[self._endpoint_index % len(endpoints)]
        self._client = make_client(endpoint)
        self._lease = await self._client.lease(self.settings.etcd_lease_ttl_s)
        await self._client.put(self.key.encode(), self.value(), lease=self._lease)
        self.registered = True
        self.last_error = None
        log.info("registered", key=self.key, endpoint=endpoint, lease=self._lease.id)

    async def _keep_alive(self) -> None:
        assert self._client is not None
        assert self._lease is not None
        interval = max(0.5, self.settings.etcd_lease_ttl_s / 3)
        while True:
            await asyncio.sleep(interval)
            started = time.monotonic()
            reply = await asyncio.wait_for(self._client.refresh_lease(self._lease.id), interval)
            if reply is None or reply.TTL <= 0:
                raise RuntimeError(f"lease {self._lease.id} expired")
            log.debug("lease refreshed", ttl=reply.TTL, took=time.monotonic() - started)
