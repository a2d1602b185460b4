"""Gateway settings: the kit's base settings plus discovery, proxy and health knobs.

Every field is the env var of the same name in upper case, documented in ``.env.example``.
Static backends are the one exception: any ``<NAME>_BASE_URL`` variable (``TTS_BASE_URL``,
``TEMPLATE_BASE_URL``...) names a backend, so they are collected by ``static_backends_from``
rather than declared as fields.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import Field, SecretStr, field_validator

from nexus_kit import ServiceSettings, load_settings

# Empty env values count as unset (the kit's rule), so Ollama is turned off by a word.
OFF = frozenset({"off", "none", "disabled"})
_BASE_URL_VAR = re.compile(r"^([A-Z][A-Z0-9_]*)_BASE_URL$")
# Not backends: the openai SDK's own variable (it points at the gateway itself), and
# public URLs a service hands to clients (e.g. IMAGES_PUBLIC_BASE_URL points back here).
_NOT_BACKENDS = frozenset({"OPENAI"})
_NOT_BACKEND_PARTS = ("_PUBLIC",)
BackendKind = Literal["nexus", "ollama", "openai"]


class GatewaySettings(ServiceSettings):
    service_name: str = "gateway"
    service_port: int = 8800

    gateway_metrics_port: int = Field(8801, ge=0, le=65535)
    gateway_metrics_host: str = "0.0.0.0"

    # Static backends: service name -> comma-separated base URLs (see static_backends_from).
    static_backends: dict[str, str] = Field(default_factory=dict)
    ollama_base_url: str = "http://127.0.0.1:11434"
    ollama_refresh_s: float = Field(30.0, gt=0, le=3600)  # also kind openai's model lists
    # OpenAI-compatible servers (kind openai): "name=url,name2=url2"; a key for one comes from
    # NEXUS_UPSTREAM_KEY_<NAME> (docs/upstreams.md).
    nexus_openai_upstreams: str = ""
    # Model aliases (aliases.py): etcd keys <prefix><alias> = {"models": [...]}.
    nexus_aliases_prefix: str = Field("/nexus/aliases/", pattern=r"^/.*/$")

    discovery_metadata_timeout_s: float = Field(2.0, gt=0, le=60)
    discovery_retry_max_s: float = Field(5.0, gt=0, le=300)
    etcd_reconnect_max_s: float = Field(5.0, gt=0, le=300)
    # Reliability (issue #12, docs/adr on lease expiry): a key gone by lease expiry keeps an
    # instance that still passes its readyz for this long; a clean deregistration removes it
    # at once. A path whose last instance left answers 503 (not 404) for ROUTE_GONE_S.
    discovery_lease_grace_s: float = Field(30.0, ge=0, le=3600)
    discovery_grace_probe_s: float = Field(1.0, gt=0, le=60)
    etcd_heartbeat_s: float = Field(2.0, ge=0, le=60)  # 0: off; a frozen etcd shows as stale
    route_gone_s: float = Field(300.0, ge=0, le=86_400)

    upstream_connect_timeout_s: float = Field(5.0, gt=0, le=300)
    upstream_first_byte_timeout_s: float = Field(60.0, gt=0, le=3600)
    llm_first_byte_timeout_s: float = Field(300.0, gt=0, le=3600)
    upstream_total_timeout_s: float = Field(900.0, ge=0, le=86_400)
    upstream_keepalive_s: float = Field(4.0, gt=0, le=300)
    upstream_max_connections: int = Field(1000, ge=1, le=100_000)
    sse_keepalive_s: float = Field(15.0, gt=0, le=600)
    # A stream whose upstream is slow (a cold model load) commits 200 text/event-stream and a
    # first comment after this long, so clients with short header timeouts keep waiting.
    sse_first_comment_s: float = Field(1.0, gt=0, le=600)
    max_json_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    # Move everything alive after startup out of the collector's reach (gc.freeze): full
    # collections then scan only request-time objects (~35 ms -> <1 ms under load).
    gc_freeze_after_startup: bool = True
    # Young-generation threshold of the cyclic GC (CPython's default: 700 allocations). With
    # hundreds of requests in flight every young collection finds their objects alive and
    # promotes them, so older collections scan them again and again (c1024: ~25% of the core
    # in GC, pauses of 0.3-0.6 s). A larger young generation lets request objects die by
    # refcount before any collection sees them (docs/adr/0015). It must exceed what the
    # requests in flight hold alive (~150 tracked objects each): at 100,000, c1024 ran a
    # young pass of ~75 ms every ~0.4 s that freed nothing. 0: CPython's default.
    gc_young_threshold: int = Field(250_000, ge=0, le=10_000_000)
    # Worker processes on one port (app/workers.py, docs/adr/0012): 0 = one per CPU this
    # process may use. Backlog and client connections (per worker) size the OS limits checked
    # at start (app/oslimits.py); the metrics socket is set by the supervisor for its workers.
    gateway_workers: int = Field(0, ge=0, le=512)
    gateway_backlog: int = Field(2048, ge=1, le=65_535)
    gateway_max_client_connections: int = Field(4096, ge=1, le=1_000_000)
    gateway_metrics_socket: str = ""

    eject_after_failures: int = Field(3, ge=1, le=1000)
    eject_s: float = Field(10.0, gt=0, le=3600)
    health_probe_interval_s: float = Field(5.0, ge=0, le=3600)

    nexus_cors_origins: str = ""

    # Auth (DESIGN "Auth"): every call needs a bearer unless this is false.
    nexus_auth_enabled: bool = True
    nexus_internal_token: SecretStr | None = None  # the gateway's credential for introspection
    auth_service_name: str = Field("auth", pattern=r"^[a-z][a-z0-9-]{0,62}$")
    auth_cache_ttl_s: float = Field(10.0, gt=0, le=30)  # a revoked key works at most this long
    auth_negative_cache_ttl_s: float = Field(5.0, ge=0, le=30)
    # While auth is unreachable, a key it called active within this window keeps working (0: off)
    auth_stale_if_error_s: float = Field(300.0, ge=0, le=3600)
    auth_timeout_s: float = Field(3.0, gt=0, le=60)
    jwt_issuer: str = "nexus-auth"
    jwt_audience: str = "nexus"
    nexus_default_rate_limit_rpm: int = Field(600, ge=0)  # 0 = unlimited
    rate_limit_storage_url: str = ""  # empty = in memory; redis://host:6379/0 to share

    # Usage accounting (usage.py, usagesink.py): records go to the service advertising
    # usage.records.ingest, in batches; undeliverable batches wait in USAGE_SPOOL_DIR
    # (default: <tmp>/nexus-usage-spool/<service name>; mount a volume there in containers).
    usage_enabled: bool = True
    usage_batch_size: int = Field(500, ge=1, le=5000)
    usage_flush_interval_s: float = Field(1.0, gt=0, le=300)
    usage_buffer_max: int = Field(100_000, ge=1, le=10_000_000)
    usage_spool_dir: str = ""
    # Bound on the spool's size (bytes): a batch that would pass it is dropped and counted.
    usage_spool_max_bytes: int = Field(1024**3, ge=4096)
    usage_retry_max_s: float = Field(30.0, gt=0, le=3600)  # backoff bound while usage is away

    @field_validator("rate_limit_storage_url")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        # shm://<file>: the workers' shared table, set by the supervisor (app/sharedlimits.py).
        if value and not value.startswith(("memory://", "redis://", "rediss://", "shm://")):
            raise ValueError("must be empty (in memory), memory:// or redis://host:port/db")
        return value

    @field_validator("ollama_base_url")
    @classmethod
    def _ollama_url(cls, value: str) -> str:
        return "" if value.strip().lower() in OFF else _check_urls(value)

    @field_validator("nexus_openai_upstreams")
    @classmethod
    def _openai_upstreams(cls, value: str) -> str:
        parse_openai_upstreams(value)
        return value

    @field_validator("static_backends")
    @classmethod
    def _static_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for name, urls in value.items():
            if not re.fullmatch(r"[a-z][a-z0-9-]{0,62}", name):
                raise ValueError(f"{name!r} is not a service name")
            _check_urls(urls)
        return value

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.nexus_cors_origins.split(",") if o.strip()]

    def backend_urls(self) -> dict[str, tuple[BackendKind, list[str]]]:
        """Static backends as ``name -> (kind, [base urls])``; Ollama's URL is one of them."""
        found: dict[str, tuple[BackendKind, list[str]]] = {
            name: ("nexus", split_urls(urls)) for name, urls in self.static_backends.items()
        }
        if split_urls(self.ollama_base_url):
            found["ollama"] = ("ollama", split_urls(self.ollama_base_url))
        for name, urls in parse_openai_upstreams(self.nexus_openai_upstreams).items():
            found[name] = ("openai", urls)
        return {name: spec for name, spec in found.items() if spec[1]}


def parse_openai_upstreams(value: str) -> dict[str, list[str]]:
    """``vllm=http://gpu1:8000,vllm=http://gpu2:8000/v1`` -> ``{"vllm": [two root URLs]}``."""
    found: dict[str, list[str]] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, sep, url = item.partition("=")
        name = name.strip()
        if not sep or not re.fullmatch(r"[a-z][a-z0-9-]{0,62}", name):
            raise ValueError(f"{item[:80]!r} is not name=url (name: lower case, digits, -)")
        _check_urls(url)
        found.setdefault(name, []).append(url.strip().rstrip("/").removesuffix("/v1"))
    return found


def split_urls(value: str) -> list[str]:
    return [u.strip().rstrip("/") for u in value.split(",") if u.strip()]


def _check_urls(value: str) -> str:
    for url in split_urls(value):
        if not url.startswith(("http://", "https://")) or not url.split("//", 1)[1]:
            raise ValueError(f"{url!r} is not an http(s) URL")
    return value


def static_backends_from(environ: Mapping[str, str]) -> dict[str, str]:
    """``TTS_BASE_URL=http://h:9940`` -> ``{"tts": "http://h:9940"}`` (``MY_SVC`` -> ``my-svc``)."""
    found: dict[str, str] = {}
    for var, value in environ.items():
        match = _BASE_URL_VAR.match(var)
        if match is None or not value or var == "OLLAMA_BASE_URL":
            continue
        prefix = match.group(1)
        if prefix in _NOT_BACKENDS or any(part in prefix for part in _NOT_BACKEND_PARTS):
            continue
        found[prefix.lower().replace("_", "-")] = value
    return found


def load_gateway_settings(env_file: Path = Path(".env"), **overrides: Any) -> GatewaySettings:
    """Settings from env and ``.env`` (env wins), static backends collected from both."""
    file_values = (
        {k: v for k, v in dotenv_values(env_file).items() if v} if env_file.is_file() else {}
    )
    merged: dict[str, str] = {**file_values, **os.environ}
    overrides.setdefault("static_backends", static_backends_from(merged))
    return load_settings(GatewaySettings, **overrides)
