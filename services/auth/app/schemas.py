"""Request and response bodies. Times are Unix seconds, as in the OpenAI API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["admin", "user"]
ID_PATTERN = r"^[a-z]{2,3}_[0-9a-f]{24}$"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateUserRequest(_Request):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    password: str = Field(min_length=8, max_length=1024)
    role: Role = "user"

    @field_validator("username")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class User(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    object: Literal["user"] = "user"
    id: str
    username: str
    role: Role
    created_at: int


class UserList(BaseModel):
    object: Literal["list"] = "list"
    data: list[User]


class TokenRequest(_Request):
    # Not pattern-checked: any string is looked up (safely) and simply not found.
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)


class RefreshRequest(_Request):
    refresh_token: str = Field(min_length=1, max_length=512)


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_expires_in: int


class Me(User):
    token_type: Literal["api_key", "access_token"]
    key_id: str | None


_TOKENS = 10**15  # a bound that fits a BIGINT with room to count past it


class KeyLimits(_Request):
    """Per-key limits: requests and tokens per minute, token budgets per UTC day and month."""

    rate_limit_rpm: int | None = Field(None, ge=1, le=1_000_000)
    rate_limit_tpm: int | None = Field(None, ge=1, le=_TOKENS)
    token_budget_daily: int | None = Field(None, ge=1, le=_TOKENS)
    token_budget_monthly: int | None = Field(None, ge=1, le=_TOKENS)


class CreateApiKeyRequest(KeyLimits):
    name: str = Field(min_length=1, max_length=128)
    user_id: str | None = Field(
        None, max_length=40, pattern=ID_PATTERN, description="Owner (admins only); default: you."
    )


class ApiKey(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    object: Literal["api_key"] = "api_key"
    id: str
    name: str
    prefix: str
    user_id: str
    rate_limit_rpm: int | None
    rate_limit_tpm: int | None = None
    token_budget_daily: int | None = None
    token_budget_monthly: int | None = None
    created_at: int


class CreatedApiKey(ApiKey):
    key: str = Field(description="The secret. Shown only in this response.")


class ApiKeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ApiKey]


class DeletedApiKey(BaseModel):
    object: Literal["api_key.deleted"] = "api_key.deleted"
    id: str
    deleted: bool = True


class IntrospectRequest(_Request):
    token: str = Field(min_length=1, max_length=4096)


class Introspection(BaseModel):
    """RFC 7662 style: ``active`` false says nothing else about the token."""

    active: bool
    subject: str | None = None
    username: str | None = None
    role: Role | None = None
    token_type: Literal["api_key", "access_token"] | None = None
    key_id: str | None = None
    rate_limit_rpm: int | None = None
    rate_limit_tpm: int | None = None
    token_budget_daily: int | None = None
    token_budget_monthly: int | None = None
    exp: int | None = None


class Jwks(BaseModel):
    keys: list[dict[str, Any]]
