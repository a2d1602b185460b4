"""The OpenAI ``POST /v1/audio/speech`` request, and the SSE events of ``stream_format: sse``.

Invalid fields fail pydantic validation, which the kit renders as a 400 envelope naming the
``param``. ``extra="forbid"`` mirrors OpenAI's ``additionalProperties: false``.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

Voice = Literal[
    "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
    "verse", "marin", "cedar",
]  # fmt: skip
ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
StreamFormat = Literal["audio", "sse"]

VOICES: tuple[str, ...] = get_args(Voice)
RESPONSE_FORMATS: tuple[str, ...] = get_args(ResponseFormat)
STREAM_FORMATS: tuple[str, ...] = get_args(StreamFormat)
MAX_INPUT_CHARS = 4096
MIN_SPEED, MAX_SPEED = 0.25, 4.0


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    voice: Voice
    # Accepted for compatibility; none of the backends can steer style from text yet.
    instructions: str | None = Field(None, max_length=MAX_INPUT_CHARS)
    response_format: ResponseFormat = "mp3"
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED, allow_inf_nan=False)
    stream_format: StreamFormat = "audio"

    @field_validator("input")
    @classmethod
    def _speakable(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must contain text to speak, not only whitespace")
        return value


class SpeechAudioDelta(BaseModel):
    type: Literal["speech.audio.delta"] = "speech.audio.delta"
    audio: str  # base64 of the next bytes of the file in ``response_format``


class SpeechUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class SpeechAudioDone(BaseModel):
    type: Literal["speech.audio.done"] = "speech.audio.done"
    usage: SpeechUsage
