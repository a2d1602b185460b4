"""Bodies: the ingest batch the gateway sends, and OpenAI's Usage API shapes we answer with.

The response shapes are OpenAI's ``UsageResponse`` / ``UsageTimeBucket`` / ``Usage*Result``
(validated against their published schemas in the tests).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["completions", "embeddings", "images", "audio_speeches", "other"]
_Count = Field(None, ge=0, le=2**53)


class RecordIn(BaseModel):
    """One usage record as the gateway sends it (see the gateway's ``usage.py``)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=64)
    request_id: str | None = Field(None, max_length=128)
    created_at: int = Field(ge=0, le=2**40)
    key_id: str | None = Field(None, max_length=64)
    subject: str | None = Field(None, max_length=64)
    endpoint: str = Field(max_length=256)
    kind: Kind = "other"
    model: str | None = Field(None, max_length=256)
    served_model: str | None = Field(None, max_length=256)
    alias: str | None = Field(None, max_length=256)
    service: str | None = Field(None, max_length=64)
    instance: str | None = Field(None, max_length=128)
    status: int = Field(ge=0, le=999)
    outcome: str = Field(max_length=32)
    input_tokens: int | None = _Count
    output_tokens: int | None = _Count
    cached_tokens: int | None = _Count
    images: int | None = _Count
    image_size: str | None = Field(None, max_length=32)
    characters: int | None = _Count
    duration_ms: int = Field(ge=0, le=2**31 - 1)
    ttft_ms: int | None = Field(None, ge=0, le=2**31 - 1)
    streamed: bool = False


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    records: list[RecordIn] = Field(max_length=100_000)


class IngestResponse(BaseModel):
    object: Literal["usage.ingest"] = "usage.ingest"
    received: int
    inserted: int  # the rest were already stored (a resent batch)


class Bucket(BaseModel):
    object: Literal["bucket"] = "bucket"
    start_time: int
    end_time: int
    results: list[dict[str, Any]]


class UsagePage(BaseModel):
    object: Literal["page"] = "page"
    data: list[Bucket]
    has_more: bool
    next_page: str | None


class Totals(BaseModel):
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    unknown_usage_requests: int = 0


class ModelTotals(Totals):
    model: str | None


class KeySummary(BaseModel):
    """What LiteLLM shows as key info: totals, today, this month, per model."""

    object: Literal["usage.key_summary"] = "usage.key_summary"
    key_id: str
    user_id: str | None
    first_used_at: int | None
    last_used_at: int | None
    total: Totals
    today: Totals
    this_month: Totals
    models: list[ModelTotals]
