"""The stub backend: a placeholder PNG drawn from the prompt, the same bytes for the same prompt.

Every choice (colours, shapes) comes from a hash of the prompt and the image's index, and
Pillow writes no timestamp into PNGs, so output is reproducible across runs and machines.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import textwrap

from PIL import Image, ImageDraw, ImageFont, ImageOps

from . import BackendState, GenerationJob

STUB_MODEL_ID = "nexus-stub"
_READY = BackendState(True, "ready", "stub backend: placeholder images drawn from the prompt")


class StubBackend:
    name = "stub"
    model_id = STUB_MODEL_ID
    max_concurrency = 2

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def state(self) -> BackendState:
        return _READY

    async def probe(self) -> BackendState:
        return _READY

    async def generate(self, job: GenerationJob) -> list[bytes]:
        # Drawing and PNG encoding of a 1792x1024 image take tens of ms: keep the loop free.
        return await asyncio.to_thread(render_all, job)


def render_all(job: GenerationJob) -> list[bytes]:
    return [render(job.prompt, job.width, job.height, index) for index in range(job.n)]


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(256), rng.randrange(256), rng.randrange(256)


def render(prompt: str, width: int, height: int, index: int = 0) -> bytes:
    """One placeholder image; image ``index`` of a batch differs from the others."""
    seed = hashlib.sha256(f"{index}\0{prompt}".encode()).digest()
    rng = random.Random(seed)
    ramp = Image.linear_gradient("L").resize((width, height))
    image = ImageOps.colorize(ramp, _colour(rng), _colour(rng))
    draw = ImageDraw.Draw(image)
    unit = min(width, height)
    for _ in range(12):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(unit // 20, unit // 5)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x - r, y - r, x + r, y + r), fill=_colour(rng), outline=(0, 0, 0))
    _caption(draw, prompt, width, unit)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _caption(draw: ImageDraw.ImageDraw, prompt: str, width: int, unit: int) -> None:
    size = max(10, unit // 24)
    font = ImageFont.load_default(size=size)
    lines = textwrap.wrap(prompt, width=max(8, int(width / (size * 0.6))))[:4]
    text = "\n".join(["nexus stub image", *lines])
    box = draw.multiline_textbbox((size, size), text, font=font)
    draw.rectangle((box[0] - 6, box[1] - 6, box[2] + 6, box[3] + 6), fill=(255, 255, 255))
    draw.multiline_text((size, size), text, font=font, fill=(0, 0, 0))
