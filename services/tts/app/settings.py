"""TTS settings: the kit's base settings plus which backend speaks and how it is set up."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from nexus_kit import ServiceSettings

from .schemas import VOICES

BackendChoice = Literal["auto", "pocket-tts", "espeak", "stub"]


def split_list(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


def parse_voice_map(value: str) -> dict[str, str]:
    """``"alloy=en-us+f3, echo=en-us+m2"`` → ``{"alloy": "en-us+f3", "echo": "en-us+m2"}``."""
    pairs: dict[str, str] = {}
    for item in split_list(value):
        name, sep, target = (p.strip() for p in item.partition("="))
        if not sep or not target:
            raise ValueError(f"{item!r} is not of the form voice=target")
        if name not in VOICES:
            raise ValueError(f"{name!r} is not a voice; voices are {', '.join(VOICES)}")
        pairs[name] = target
    return pairs


class TTSSettings(ServiceSettings):
    service_name: str = "tts"
    service_port: int = 9940

    # auto = the first that works of pocket-tts, espeak, stub.
    tts_backend: BackendChoice = "auto"
    # Model ids clients may send; the backend's own id is advertised on top of these.
    tts_models: str = "tts-1,tts-1-hd,gpt-4o-mini-tts"
    # libespeak-ng and its espeak-ng-data; empty = the ones the espeakng-loader wheel ships.
    tts_espeak_library: str = ""
    tts_espeak_data: str = ""
    # Overrides of the OpenAI voice → espeak voice map, e.g. "alloy=en-gb+f2".
    tts_espeak_voices: str = ""
    # Pocket TTS: a language config shipped with the package, or a YAML config path/URL.
    tts_pocket_language: str = "english"
    tts_pocket_config: str = ""
    # Overrides of the OpenAI voice → Pocket TTS voice map (catalogue name, audio file or
    # .safetensors voice state), e.g. "alloy=/voices/me.wav".
    tts_pocket_voices: str = ""
    tts_pocket_quantize: bool = False
    # One model instance speaks at a time; requests queued beyond this many get 429.
    tts_pocket_max_queue: int = Field(8, ge=0, le=1000)

    @field_validator("tts_espeak_voices", "tts_pocket_voices")
    @classmethod
    def _voice_map(cls, value: str) -> str:
        parse_voice_map(value)
        return value

    @field_validator("tts_models")
    @classmethod
    def _models(cls, value: str) -> str:
        if not split_list(value):
            raise ValueError("must name at least one model id")
        return value

    @property
    def model_ids(self) -> list[str]:
        return split_list(self.tts_models)
