"""``POST /v1/images/generations`` (OpenAI shape) and the capability URLs of ``url`` results."""

from __future__ import annotations

import base64
import math
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from nexus_kit import ModelNotFoundError, endpoint_flags
from nexus_kit.tracing import span

from .backends import GenerationJob
from .errors import ImageFileNotFoundError
from .schemas import ImageData, ImageGenerationRequest, ImagesResponse, parse_size
from .state import ImagesState, images_state

router = APIRouter()
State = Annotated[ImagesState, Depends(images_state)]
FILES_PATH = "/v1/images/files"


@router.post(
    "/v1/images/generations",
    operation_id="images.generate",
    summary="Create images from a text prompt",
    response_model_exclude_none=True,
)
async def create_images(body: ImageGenerationRequest, state: State) -> ImagesResponse:
    if body.model is not None and body.model not in state.model_ids():
        raise ModelNotFoundError(body.model)
    width, height = parse_size(body.size or state.settings.images_default_size)
    job = GenerationJob(
        prompt=body.prompt, width=width, height=height, n=body.n or 1,
        quality=body.quality, style=body.style,
    )  # fmt: skip
    backend = state.generator.backend.name
    attributes = {"nexus.images.backend": backend, "nexus.images.n": job.n,
                  "nexus.images.size": f"{width}x{height}"}  # fmt: skip
    with span("images.generate", attributes=attributes):  # queue wait + generation
        images = await state.generator.generate(job)
    as_url = (body.response_format or "url") == "url"  # OpenAI's default is url
    data = [await _url_item(state, png) if as_url else _b64_item(png) for png in images]
    return ImagesResponse(created=int(time.time()), data=data)


def _b64_item(png: bytes) -> ImageData:
    return ImageData(b64_json=base64.b64encode(png).decode("ascii"))


async def _url_item(state: ImagesState, png: bytes) -> ImageData:
    file_id = await state.files.put(png)
    return ImageData(url=f"{state.settings.public_base_url}{FILES_PATH}/{file_id}")


@router.get(
    FILES_PATH + "/{file_id}",
    operation_id="images.files.get",
    summary="Fetch a generated image by its unguessable, expiring id",
    openapi_extra=endpoint_flags(public=True),
    response_class=Response,
)
async def get_image_file(file_id: str, state: State) -> Response:
    found = await state.files.get(file_id)
    if found is None:
        raise ImageFileNotFoundError()
    data, seconds_left = found
    # Caches may keep it only for the rest of its life, and only for this client.
    headers = {"Cache-Control": f"private, max-age={math.floor(seconds_left)}"}
    return Response(data, media_type="image/png", headers=headers)
