"""Usage settings: the kit's base settings plus storage and the ingest credential.

Every field is the env var of the same name in upper case, documented in ``.env.example``.
Validation errors never echo values (``DATABASE_URL`` may hold a password).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from nexus_kit import ServiceSettings
from nexus_kit.database import SCHEMA_PATTERN, async_database_url

SERVICE_DIR = Path(__file__).resolve().parents[1]
DEFAULT_DATABASE_URL = f"sqlite+aiosqlite:///{SERVICE_DIR / 'usage.db'}"


class UsageSettings(ServiceSettings):
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    service_name: str = "usage"
    service_port: int = 8820

    database_url: str = DEFAULT_DATABASE_URL
    database_schema: str | None = Field(None, pattern=SCHEMA_PATTERN)
    # The gateway's credential for POST /v1/usage/records (the same token it uses with auth).
    nexus_internal_token: SecretStr | None = None
    max_batch_records: int = Field(5000, ge=1, le=100_000)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return async_database_url(value)

    @field_validator("database_url", "database_schema", "nexus_internal_token", mode="before")
    @classmethod
    def _blank_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        if value == "" and info.field_name is not None:
            return cls.model_fields[info.field_name].default
        return value


def load_usage_settings(**overrides: Any) -> UsageSettings:
    """Like ``nexus_kit.load_settings``, but the one-line error never prints a value."""
    try:
        return UsageSettings(**overrides)
    except ValidationError as error:
        parts = [
            f"{'_'.join(str(p) for p in item['loc']).upper() or 'settings'}: {item['msg']}"
            for item in error.errors()
        ]
        print(f"UsageSettings: invalid configuration: {'; '.join(parts)}", file=sys.stderr)
        raise SystemExit(2) from None
