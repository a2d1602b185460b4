"""Model aliases: one name for an ordered list of models, kept in etcd, seen by every replica.

An alias lives at ``<NEXUS_ALIASES_PREFIX><alias>`` (default ``/nexus/aliases/``) as
``{"models": ["llama3.2", "qwen2.5:7b"]}``. Every gateway replica reads the prefix and watches
it (a reconnect re-reads it whole), so a change made through any replica's admin API, or with
``etcdctl put``, reaches all of them without a restart. Requests never wait on etcd: they read
the current ``dict`` (replaced whole on each change).

A request naming an alias goes to the first of its models with a ready instance and falls
over to the next on a 503, no ready instance or a connect failure, before the first response
byte reaches the client (``proxy.Proxy._open_alias``); the body goes upstream with ``model``
set to the model tried. An alias shadows a model of the same name.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import Any

import aetcd
import orjson

from nexus_kit import InvalidRequestError, ServiceUnavailableError, get_logger
from nexus_kit.etcd import parse_endpoint

from .etcd import Change, EtcdSource, KeyValue
from .settings import GatewaySettings

log = get_logger("nexus.gateway.aliases")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_MODELS = 16
MAX_MODEL_CHARS = 256


def with_model(body: bytes, model: str) -> bytes:
    """The JSON body with its ``model`` replaced (alias requests only: one parse, one dump)."""
    doc = orjson.loads(body)
    doc["model"] = model
    return orjson.dumps(doc)


def check_name(alias: str) -> str:
    if not NAME.match(alias):
        raise InvalidRequestError(
            f"Invalid alias name {alias[:64]!r}: letters, digits, '.', '_', ':' and '-', "
            "at most 128 characters.",
            param="alias",
            code="invalid_alias",
        )
    return alias


def parse_models(raw: bytes, alias: str) -> tuple[str, ...]:
    """A PUT body ``{"models": [...]}`` -> the models in order (400 naming the field)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequestError(
            "We could not parse the JSON body of your request: it is not valid JSON.",
            code="invalid_json",
        ) from None
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, list) or not models or len(models) > MAX_MODELS:
        raise InvalidRequestError(
            f"'models' must be a list of 1 to {MAX_MODELS} model names.", param="models"
        )
    if not all(isinstance(m, str) and 0 < len(m) <= MAX_MODEL_CHARS for m in models):
        raise InvalidRequestError(
            f"Every entry of 'models' must be a model name of 1 to {MAX_MODEL_CHARS} characters.",
            param="models",
        )
    if len(set(models)) != len(models) or alias in models:
        raise InvalidRequestError(
            "'models' must not repeat a name or name the alias itself.", param="models"
        )
    return tuple(models)


def alias_object(alias: str, models: tuple[str, ...]) -> dict[str, Any]:
    return {"object": "model.alias", "id": alias, "models": list(models)}


class Aliases:
    """The current aliases, kept in step with etcd by one watch task."""

    def __init__(
        self, settings: GatewaySettings, source_factory: Callable[[str], EtcdSource]
    ) -> None:
        self.settings = settings
        self.prefix = settings.nexus_aliases_prefix
        self._source_factory = source_factory
        self.table: dict[str, tuple[str, ...]] = {}
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def get(self, model: str) -> tuple[str, ...] | None:
        return self.table.get(model)

    def start(self) -> None:
        if self.settings.etcd_endpoint_list:
            self._task = asyncio.create_task(self._loop(), name="gateway-aliases")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        endpoints = self.settings.etcd_endpoint_list
        delay, attempt = 0.1, 0
        while True:
            source = self._source_factory(endpoints[attempt % len(endpoints)])
            try:
                revision, kvs = await source.read(self.prefix)
                self.table = dict(filter(None, (self._parse(kv) for kv in kvs)))
                self.error, delay = None, 0.1
                async for change in source.watch(self.prefix, revision + 1):
                    self._apply(change)
                raise ConnectionError("watch stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"[:300]
                attempt += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.etcd_reconnect_max_s)
            finally:
                await source.close()

    def _apply(self, change: Change) -> None:
        table = dict(self.table)
        parsed = self._parse(change.kv) if change.kind == "put" else None
        alias = change.kv.key[len(self.prefix) :]
        table.pop(alias, None)
        if parsed is not None:
            table[parsed[0]] = parsed[1]
        self.table = table  # one assignment: requests see the old or the new, never half
        log.info("alias changed", alias=alias, models=list(parsed[1]) if parsed else None)

    def _parse(self, kv: KeyValue) -> tuple[str, tuple[str, ...]] | None:
        alias = kv.key[len(self.prefix) :]
        try:
            return check_name(alias), parse_models(kv.value, alias)
        except InvalidRequestError as error:
            log.warning("ignoring unreadable alias", key=kv.key, error=error.message)
            return None

    # writes (the admin API): to etcd; the watch brings them to every replica, this one too

    async def put(self, alias: str, models: tuple[str, ...]) -> None:
        value = orjson.dumps({"models": list(models)})
        await self._write(lambda c: c.put(self._key(alias), value))
        self.table = {**self.table, alias: models}  # read-your-write before the watch echo

    async def delete(self, alias: str) -> bool:
        deleted = await self._write(lambda c: c.delete(self._key(alias)))
        self.table = {k: v for k, v in self.table.items() if k != alias}
        return bool(deleted)

    def _key(self, alias: str) -> bytes:
        return f"{self.prefix}{alias}".encode()

    async def _write(self, op: Callable[[aetcd.Client], Any]) -> Any:
        endpoints = self.settings.etcd_endpoint_list
        if not endpoints:
            raise ServiceUnavailableError("Aliases are stored in etcd; ETCD_ENDPOINTS is not set.")
        for endpoint in endpoints:
            host, port = parse_endpoint(endpoint)
            client = aetcd.Client(host=host, port=port, timeout=3, connect_wait_timeout=2)
            try:
                return await op(client)
            except Exception as exc:
                log.warning("alias write failed", endpoint=endpoint, error=type(exc).__name__)
            finally:
                with contextlib.suppress(Exception):
                    await client.close()
        raise ServiceUnavailableError("etcd is unavailable; the alias was not changed.")
