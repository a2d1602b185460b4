"""The diffusers backend for real, on the CPU: a tiny randomly initialised Stable Diffusion
pipeline is built and saved here, then loaded by the service through ``from_pretrained``.

Needs the optional extra (requirements-diffusers.txt); skipped, saying so, without it.
"""

from __future__ import annotations

import asyncio
import json
import os
import string
import threading
from pathlib import Path

import httpx
import pytest

from app.main import build_app
from app.settings import ImagesSettings
from tests.conftest import ClientFactory, PngDecoder, SettingsFactory

# Never reach for the hub: everything loads from the directory the test writes. huggingface_hub
# reads this when it is imported, so it is set before the imports below.
os.environ["HF_HUB_OFFLINE"] = "1"
_EXTRA = "the diffusers extra: pip install -r services/images/requirements-diffusers.txt"
torch = pytest.importorskip("torch", reason=_EXTRA)
diffusers = pytest.importorskip("diffusers", reason=_EXTRA)
transformers = pytest.importorskip("transformers", reason=_EXTRA)

GENERATE = "/v1/images/generations"


def _tokenizer(folder: Path) -> object:
    """A CLIP BPE tokenizer over single characters: a vocab.json and an empty merges list."""
    folder.mkdir(parents=True)
    chars = string.ascii_lowercase + string.digits + ".,!?'-"
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return transformers.CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77
    )


def build_tiny_pipeline(target: Path) -> None:
    torch.manual_seed(0)
    tokenizer = _tokenizer(target.parent / "tokenizer-source")
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37,  # type: ignore[arg-type]
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))  # fmt: skip
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32,
        in_channels=4, out_channels=4, cross_attention_dim=32, attention_head_dim=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )  # fmt: skip
    # Four levels so the VAE scales by 8, as real Stable Diffusion VAEs do.
    vae = diffusers.AutoencoderKL(
        block_out_channels=(32, 32, 32, 32), latent_channels=4, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )  # fmt: skip
    scheduler = diffusers.DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(str(target))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("tiny-sd") / "tiny-sd"
    build_tiny_pipeline(target)
    return target


async def _wait_ready(client: httpx.AsyncClient) -> httpx.Response:
    for _ in range(1200):
        resp = await client.get("/readyz")
        if resp.status_code == 200:
            return resp
        if "failed" in resp.text:
            raise AssertionError(resp.text)
        await asyncio.sleep(0.05)
    raise AssertionError("the tiny model never finished loading")


def _settings(make_settings: SettingsFactory, model: Path | str) -> ImagesSettings:
    return make_settings(
        images_backend="diffusers", images_model=str(model), images_steps=2,
        images_device="auto",
    )  # fmt: skip


async def test_loads_in_background_then_generates(
    tiny_model: Path, make_settings: SettingsFactory, open_client: ClientFactory,
    decode_png: PngDecoder,
) -> None:  # fmt: skip
    app = build_app(_settings(make_settings, tiny_model))
    # Occupy the device thread so the load is certainly still pending when we first look.
    gate = threading.Event()
    app.state.images.backend._executor.submit(gate.wait)
    async with open_client(app) as client:
        loading = await client.get("/readyz")
        early = await client.post(GENERATE, json={"prompt": "a fox", "size": "256x256"})
        gate.set()
        ready = await _wait_ready(client)
        doc = (await client.get("/v1/metadata")).json()
        body = {"prompt": "a red fox", "size": "256x256", "response_format": "b64_json"}
        resp = await client.post(GENERATE, json=body)
        metrics = (await client.get("/metrics")).text
    assert loading.status_code == 503
    assert "loading" in loading.json()["checks"]["backend"]["detail"]
    assert early.status_code == 503
    assert early.json()["error"]["code"] == "model_not_ready"
    assert "on cpu" in ready.json()["checks"]["backend"]["detail"]
    assert doc["options"]["backend"] == "diffusers"
    assert "tiny-sd" in [m["id"] for m in doc["models"]]
    assert resp.status_code == 200, resp.text
    assert decode_png(resp.json()["data"][0]["b64_json"]).size == (256, 256)
    assert 'nexus_images_generations_total{backend="diffusers",outcome="ok"} 1.0' in metrics


async def test_missing_model_fails_plainly(
    tmp_path: Path, make_settings: SettingsFactory, open_client: ClientFactory
) -> None:
    app = build_app(_settings(make_settings, tmp_path / "no-such-model"))
    async with open_client(app) as client:
        for _ in range(1200):
            ready = await client.get("/readyz")
            if "failed" in ready.text:
                break
            await asyncio.sleep(0.05)
        resp = await client.post(GENERATE, json={"prompt": "a fox", "size": "256x256"})
    assert ready.status_code == 503
    assert "failed" in ready.json()["checks"]["backend"]["detail"]
    assert resp.status_code == 503
