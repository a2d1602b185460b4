"""Service settings: one pydantic-settings base class every service extends.

Settings come from the environment and from a ``.env`` file in the directory the service is
started from (its own directory, as ``uvicorn app.main:app`` is run there). Tests build a
settings object with explicit values and hand it to the app factory instead.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound="ServiceSettings")
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PEPPER", "URL", "DSN")


class ServiceSettings(BaseSettings):
    """What every Nexus service reads from its environment."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        # `SERVICE_INSTANCE_ID=` copied from .env.example means "unset", not "empty string".
        env_ignore_empty=True,
    )

    service_name: str = Field("service", pattern=r"^[a-z][a-z0-9-]{0,62}$")
    service_version: str = "0.1.0"
    service_port: int = Field(8000, ge=1, le=65535)
    service_advertise_url: str | None = None
    service_instance_id: str | None = None
    etcd_endpoints: str = ""
    nexus_etcd_prefix: str = "/nexus/services/"
    etcd_lease_ttl_s: int = Field(15, ge=2, le=3600)
    shutdown_grace_s: float = Field(10.0, ge=0, le=600)
    # Pre-stop window (drain.py): on SIGTERM readiness answers 503 this long while the service
    # still accepts and serves, so probes and load balancers see it before the listener closes.
    prestop_delay_s: float = Field(3.0, ge=0, le=300)
    log_level: str = "INFO"

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("nexus_etcd_prefix")
    @classmethod
    def _slash_prefix(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value if value.endswith("/") else value + "/"

    @field_validator("etcd_endpoints")
    @classmethod
    def _endpoints(cls, value: str) -> str:
        for item in filter(None, (p.strip() for p in value.split(","))):
            if not item.startswith(("http://", "https://")) or ":" not in item.split("//", 1)[1]:
                raise ValueError(f"{item!r} is not of the form http://host:port")
        return value

    @property
    def advertise_url(self) -> str:
        """Base URL other components use to reach this instance."""
        url = self.service_advertise_url or f"http://127.0.0.1:{self.service_port}"
        return url.rstrip("/")

    @property
    def instance_id(self) -> str:
        """Stable for the life of the settings object; the etcd key's last segment."""
        if self.service_instance_id is None:
            self.service_instance_id = f"{self.service_name}-{uuid.uuid4().hex[:8]}"
        return self.service_instance_id

    @property
    def etcd_endpoint_list(self) -> list[str]:
        return [p.strip() for p in self.etcd_endpoints.split(",") if p.strip()]


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad variable, as an operator would type it."""
    parts = []
    for item in error.errors():
        name = "_".join(str(p) for p in item["loc"]).upper() or "settings"
        if any(word in name for word in _SECRET_WORDS):
            parts.append(f"{name}=<hidden>: {item['msg']}")  # never echo what may be a secret
        else:
            given: Any = item.get("input")
            parts.append(f"{name}={given!r}: {item['msg']}")
    return "invalid configuration: " + "; ".join(parts)


def cli_port(argv: list[str]) -> int | None:
    """The ``--port`` given to ``uvicorn app.main:app`` on the command line, if any."""
    for i, arg in enumerate(argv):
        value = None
        if arg == "--port" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--port="):
            value = arg.split("=", 1)[1]
        if value is not None and value.isdigit():
            return int(value)
    return None


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Read settings from env/.env; on a bad value print one clear line and exit(2).

    When started as ``uvicorn app.main:app --port N``, N is the port the process really listens
    on, so it wins over ``SERVICE_PORT`` (otherwise the instance would advertise a wrong URL).
    """
    port = cli_port(sys.argv)
    if port is not None:
        overrides.setdefault("service_port", port)
    try:
        return cls(**overrides)
    except ValidationError as error:
        print(f"{cls.__name__}: {describe_validation_error(error)}", file=sys.stderr)
        raise SystemExit(2) from None
