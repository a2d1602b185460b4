"""Auth settings: the kit's base settings plus storage, bootstrap, JWT and hashing knobs.

Every field is an env var of the same name in upper case (``JWT_ACCESS_TTL_S``...), documented
in ``.env.example``. Secrets are ``SecretStr`` and validation errors never echo input values
(``DATABASE_URL`` may hold a password; ``NEXUS_ADMIN_API_KEY`` is one).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from nexus_kit import ServiceSettings
from nexus_kit.database import SCHEMA_PATTERN, async_database_url

SERVICE_DIR = Path(__file__).resolve().parents[1]
DEFAULT_DATABASE_URL = f"sqlite+aiosqlite:///{SERVICE_DIR / 'auth.db'}"
API_KEY_PATTERN = re.compile(r"^nx-[A-Za-z0-9_-]{20,200}$")
TOKEN_PATTERN = re.compile(r"^[\x21-\x7e]{16,4096}$")  # what fits in "Bearer <token>"


class AuthSettings(ServiceSettings):
    # Merged with the base config (env, .env, extra="ignore").
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    service_name: str = "auth"
    service_port: int = 8810

    database_url: str = DEFAULT_DATABASE_URL
    database_schema: str | None = Field(None, pattern=SCHEMA_PATTERN)

    nexus_admin_api_key: SecretStr | None = None
    nexus_admin_username: str = Field("admin", pattern=r"^[a-z0-9._@-]{1,64}$")
    nexus_internal_token: SecretStr | None = None

    jwt_issuer: str = Field("nexus-auth", min_length=1)
    jwt_audience: str = Field("nexus", min_length=1)
    jwt_access_ttl_s: int = Field(900, ge=30, le=86_400)
    jwt_refresh_ttl_s: int = Field(30 * 86_400, ge=60, le=365 * 86_400)
    jwt_signing_key_file: Path = SERVICE_DIR / "jwt-signing-key.pem"
    jwt_verify_key_files: str = ""
    jwt_key_algorithm: Literal["EdDSA", "RS256"] = "EdDSA"

    api_key_pepper: SecretStr = SecretStr("nexus-api-key-v1")
    password_hash_time_cost: int = Field(3, ge=1, le=20)
    password_hash_memory_kib: int = Field(65_536, ge=64, le=4_194_304)
    password_hash_parallelism: int = Field(4, ge=1, le=64)

    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return async_database_url(value)

    @field_validator(
        "database_url",
        "database_schema",
        "jwt_signing_key_file",
        "nexus_admin_api_key",
        "nexus_internal_token",
        mode="before",
    )
    @classmethod
    def _blank_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        # `VAR=` in a .env copied from .env.example means "the default", not "empty".
        if value == "" and info.field_name is not None:
            return cls.model_fields[info.field_name].default
        return value

    @field_validator("nexus_admin_api_key")
    @classmethod
    def _admin_key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not API_KEY_PATTERN.match(value.get_secret_value()):
            raise ValueError("must be 'nx-' followed by 20 to 200 of [A-Za-z0-9_-]")
        return value

    @field_validator("nexus_internal_token")
    @classmethod
    def _internal_token_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not TOKEN_PATTERN.match(value.get_secret_value()):
            raise ValueError("must be 16 or more printable ASCII characters without spaces")
        return value

    @property
    def verify_key_paths(self) -> list[Path]:
        return [Path(p.strip()) for p in self.jwt_verify_key_files.split(",") if p.strip()]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_auth_settings(**overrides: Any) -> AuthSettings:
    """Like ``nexus_kit.load_settings``, but the one-line error never prints a value."""
    try:
        return AuthSettings(**overrides)
    except ValidationError as error:
        parts = [
            f"{'_'.join(str(p) for p in item['loc']).upper() or 'settings'}: {item['msg']}"
            for item in error.errors()
        ]
        print(f"AuthSettings: invalid configuration: {'; '.join(parts)}", file=sys.stderr)
        raise SystemExit(2) from None
