"""Settings: each backend's required variable is named when it is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import ImagesSettings
from nexus_kit.settings import describe_validation_error


def _error(**values: object) -> str:
    with pytest.raises(ValidationError) as caught:
        ImagesSettings(_env_file=None, **values)  # type: ignore[arg-type]
    return describe_validation_error(caught.value)


def test_defaults_are_the_stub_on_7860() -> None:
    settings = ImagesSettings(_env_file=None)
    assert (settings.service_name, settings.service_port) == ("images", 7860)
    assert settings.images_backend == "stub"
    assert settings.model_aliases == ["dall-e-2", "dall-e-3"]
    assert settings.public_base_url == "http://127.0.0.1:7860"


def test_diffusers_needs_a_model() -> None:
    assert "IMAGES_MODEL=" in _error(images_backend="diffusers")


def test_a1111_needs_an_upstream_url() -> None:
    assert "IMAGES_UPSTREAM_URL=" in _error(images_backend="a1111")


@pytest.mark.parametrize(
    ("name", "value"),
    [("images_backend", "dalle"), ("images_default_size", "300x300"),
     ("images_public_base_url", "gateway:8800"), ("images_queue_size", -1)],
)  # fmt: skip
def test_bad_values_are_named(name: str, value: object) -> None:
    assert f"{name.upper()}=" in _error(**{name: value})


def test_public_base_url_overrides_advertise_url() -> None:
    settings = ImagesSettings(
        _env_file=None, images_public_base_url="http://gw:8800/services/images/"
    )
    assert settings.public_base_url == "http://gw:8800/services/images"


def test_env_example_is_valid_and_documents_every_setting() -> None:
    example = Path(__file__).resolve().parents[1] / ".env.example"
    settings = ImagesSettings(_env_file=str(example))
    assert settings.images_steps is None
    documented = {line.split("=", 1)[0] for line in example.read_text().splitlines()
                  if "=" in line and not line.startswith("#")}  # fmt: skip
    assert documented == {name.upper() for name in ImagesSettings.model_fields}
