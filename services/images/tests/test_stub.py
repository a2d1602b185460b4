"""The stub backend draws the same PNG for the same prompt, at exactly the asked size."""

from __future__ import annotations

import pytest

from app.backends import GenerationJob
from app.backends.stub import StubBackend, render
from tests.conftest import PngDecoder


def test_same_prompt_same_bytes() -> None:
    assert render("a red fox", 256, 256) == render("a red fox", 256, 256)


def test_other_prompt_or_index_other_image() -> None:
    first = render("a red fox", 256, 256)
    assert render("a blue fox", 256, 256) != first
    assert render("a red fox", 256, 256, index=1) != first


@pytest.mark.parametrize(("width", "height"), [(256, 256), (1792, 1024), (1024, 1792)])
def test_png_of_asked_size(width: int, height: int, decode_png: PngDecoder) -> None:
    image = decode_png(render("a lighthouse in a storm " * 20, width, height))
    assert image.size == (width, height)


async def test_backend_returns_n_distinct_images() -> None:
    images = await StubBackend().generate(GenerationJob("two cats", 256, 256, n=3))
    assert len(images) == 3
    assert len(set(images)) == 3
    assert images[0] == render("two cats", 256, 256)
