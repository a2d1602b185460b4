"""The a1111 backend: AUTOMATIC1111's (or Forge's) web UI API, ``POST /sdapi/v1/txt2img``.

The web UI answers base64 images; they are checked and re-encoded as PNG of the asked size when
they are not already exactly that. Upstream trouble maps to 502/504, never to a 500.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from typing import Any

import httpx
from PIL import Image, UnidentifiedImageError

from app.settings import ImagesSettings
from nexus_kit import UpstreamError, UpstreamTimeoutError, forward_headers

from . import BackendState, GenerationJob

TXT2IMG = "/sdapi/v1/txt2img"
OPTIONS = "/sdapi/v1/options"


class A1111Backend:
    name = "a1111"
    # The web UI renders one job at a time itself; more in flight would only wait there.
    max_concurrency = 1

    def __init__(self, settings: ImagesSettings) -> None:
        self.base_url = settings.images_upstream_url
        self.model_id = settings.images_model or "a1111"
        self.settings = settings
        self._client: httpx.AsyncClient | None = None
        self._state = BackendState(False, "unknown", f"a1111: {self.base_url} not probed yet")

    async def start(self) -> None:
        timeout = httpx.Timeout(self.settings.images_upstream_timeout_s, connect=5.0)
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def state(self) -> BackendState:
        return self._state

    async def probe(self) -> BackendState:
        self._state = await self._ask_options()
        return self._state

    async def _ask_options(self) -> BackendState:
        try:
            resp = await self._http().get(OPTIONS, timeout=2.0)
            resp.raise_for_status()
            checkpoint = resp.json().get("sd_model_checkpoint", "unknown checkpoint")
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            detail = f"a1111: {self.base_url} does not answer: {type(exc).__name__}: {exc}"
            return BackendState(False, "unreachable", detail)
        return BackendState(True, "ready", f"a1111: {self.base_url} with {checkpoint}")

    async def generate(self, job: GenerationJob) -> list[bytes]:
        body = await self._txt2img(self._payload(job))
        images = body.get("images") if isinstance(body, dict) else None
        if not isinstance(images, list) or len(images) < job.n:
            raise UpstreamError(f"AUTOMATIC1111 returned no or too few images for {job.n}.")
        return await asyncio.to_thread(_convert_all, images[: job.n], job.width, job.height)

    def _payload(self, job: GenerationJob) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "prompt": job.prompt,
            "width": job.width,
            "height": job.height,
            # n_iter renders the n images one after another: a batch of n large images may
            # not fit in the GPU's memory.
            "batch_size": 1,
            "n_iter": job.n,
            "send_images": True,
            "save_images": False,
            "do_not_save_samples": True,
            "do_not_save_grid": True,
        }
        if self.settings.images_steps is not None:
            payload["steps"] = self.settings.images_steps
        if self.settings.images_guidance_scale is not None:
            payload["cfg_scale"] = self.settings.images_guidance_scale
        return payload

    async def _txt2img(self, payload: dict[str, Any]) -> Any:
        try:
            resp = await self._http().post(TXT2IMG, json=payload, headers=forward_headers())
        except httpx.TimeoutException:
            raise UpstreamTimeoutError(
                f"AUTOMATIC1111 at {self.base_url} did not answer in time."
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"AUTOMATIC1111 at {self.base_url} is unreachable ({type(exc).__name__})."
            ) from None
        if resp.status_code != 200:
            raise UpstreamError(f"AUTOMATIC1111 answered {resp.status_code}: {resp.text[:200]}")
        try:
            return resp.json()
        except ValueError:
            raise UpstreamError("AUTOMATIC1111 answered something that is not JSON.") from None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("a1111 backend used before start()")
        return self._client


def _convert_all(images: list[Any], width: int, height: int) -> list[bytes]:
    return [_to_png(item, width, height) for item in images]


def _to_png(item: Any, width: int, height: int) -> bytes:
    """Decode one base64 image; keep it when it is a PNG of the right size, else convert."""
    if not isinstance(item, str):
        raise UpstreamError("AUTOMATIC1111 sent an image that is not a base64 string.")
    # Some front ends send a data URL rather than bare base64.
    data_part = item.split(",", 1)[1] if item.startswith("data:") else item
    try:
        raw = base64.b64decode(data_part, validate=True)
        image: Image.Image = Image.open(io.BytesIO(raw))
        image.load()
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError):
        raise UpstreamError("AUTOMATIC1111 sent an image that could not be decoded.") from None
    if image.format == "PNG" and image.size == (width, height):
        return raw
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    if image.mode not in {"RGB", "RGBA", "L", "LA", "P"}:
        image = image.convert("RGB")  # e.g. CMYK from a JPEG; PNG cannot hold it
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
