"""Images settings: the kit's base settings plus what chooses and tunes the backend."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from nexus_kit import ServiceSettings

from .schemas import SIZES, Size

BackendName = Literal["stub", "diffusers", "a1111"]


class ImagesSettings(ServiceSettings):
    service_name: str = "images"
    service_port: int = 7860

    images_backend: BackendName = "stub"
    # diffusers: a local directory or a Hugging Face hub id; a1111: the name to advertise.
    images_model: str = ""
    images_model_aliases: str = "dall-e-2,dall-e-3"
    images_default_size: Size = "1024x1024"
    images_queue_size: int = Field(8, ge=0, le=1000)
    # None keeps the pipeline's (or the web UI's) own default.
    images_steps: int | None = Field(None, ge=1, le=500)
    images_guidance_scale: float | None = Field(None, ge=0, le=50)
    images_device: str = "auto"
    images_dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    images_upstream_url: str = ""
    images_upstream_timeout_s: float = Field(300.0, gt=0, le=3600)
    images_public_base_url: str = ""
    images_url_ttl_s: float = Field(3600.0, gt=0, le=7 * 24 * 3600)
    images_files_dir: str = ""

    @field_validator("images_steps", "images_guidance_scale", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `IMAGES_STEPS=` in a .env file means "not set", not "parse '' as a number".
        return None if value == "" else value

    # Field validators (not a model validator) so the startup error names the variable.
    @field_validator("images_model")
    @classmethod
    def _model_for_diffusers(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("images_backend") == "diffusers" and not value.strip():
            raise ValueError("must be a local path or hub id when IMAGES_BACKEND=diffusers")
        return value.strip()

    @field_validator("images_upstream_url")
    @classmethod
    def _url_for_a1111(cls, value: str, info: ValidationInfo) -> str:
        needed = info.data.get("images_backend") == "a1111"
        if (needed or value) and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL of the web UI when IMAGES_BACKEND=a1111")
        return value.rstrip("/")

    @field_validator("images_public_base_url")
    @classmethod
    def _http_base(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL, e.g. http://host:8800/services/images")
        return value.rstrip("/")

    @property
    def model_aliases(self) -> list[str]:
        return [a.strip() for a in self.images_model_aliases.split(",") if a.strip()]

    @property
    def public_base_url(self) -> str:
        """Where clients fetch ``url`` results; the gateway prefix in the local stack."""
        return (self.images_public_base_url or self.advertise_url).rstrip("/")


__all__ = ["SIZES", "BackendName", "ImagesSettings"]
