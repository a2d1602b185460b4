"""The OpenAI ``/v1/images/generations`` request and response bodies."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator
from pydantic_core import PydanticCustomError

Size = Literal["256x256", "512x512", "1024x1024", "1792x1024", "1024x1792"]
SIZES: tuple[Size, ...] = ("256x256", "512x512", "1024x1024", "1792x1024", "1024x1792")
RESPONSE_FORMATS = ("url", "b64_json")
# dall-e-3's limit; longer prompts are cut by every text encoder we drive anyway.
MAX_PROMPT_CHARS = 4000


class ImageGenerationRequest(BaseModel):
    # Clients (the SDK, LangChain) send parameters of newer image models that we have no use
    # for, such as `moderation` or `safety_identifier`: ignore those rather than fail.
    model_config = ConfigDict(extra="ignore")

    prompt: StrictStr = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: StrictStr | None = None
    n: StrictInt | None = Field(None, ge=1, le=10)
    size: StrictStr | None = None
    response_format: Literal["url", "b64_json"] | None = None
    quality: Literal["standard", "hd", "low", "medium", "high", "xhigh", "max", "auto"] | None = (
        None
    )
    style: Literal["vivid", "natural"] | None = None
    user: StrictStr | None = Field(None, max_length=256)
    # Only PNG is produced and nothing streams; say so instead of silently ignoring the ask.
    output_format: Literal["png"] | None = None
    stream: Literal[False] | None = None

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("blank", "the prompt must not be blank")
        return value

    @field_validator("size")
    @classmethod
    def _known_size(cls, value: str | None) -> str | None:
        if value is not None and value not in SIZES:
            raise PydanticCustomError(
                "size", "'{given}' is not supported; use one of {allowed}",
                {"given": value, "allowed": ", ".join(SIZES)},
            )  # fmt: skip
        return value


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]


def parse_size(size: str) -> tuple[int, int]:
    width, height = size.split("x")
    return int(width), int(height)
