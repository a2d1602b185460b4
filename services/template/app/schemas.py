"""Request and response bodies of the example endpoint."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EchoRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=10_000)


class EchoResponse(BaseModel):
    message: str
    service: str
