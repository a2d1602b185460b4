"""A crashing backend answers 500 without details and the service keeps serving; a full
queue answers 429 at once."""

from __future__ import annotations

import asyncio

from app.backends import GenerationJob
from app.backends.stub import StubBackend, render
from app.main import build_app
from app.state import ImagesState
from tests.conftest import ClientFactory, SchemaCheck, SettingsFactory

GENERATE = "/v1/images/generations"


class FakeBackend(StubBackend):
    """Crashes on the prompt 'crash'; holds every generation until ``release`` is set."""

    name = "fake"
    model_id = "fake-model"
    max_concurrency = 1

    def __init__(self, hold: bool = False) -> None:
        self.release = asyncio.Event()
        if not hold:
            self.release.set()

    async def generate(self, job: GenerationJob) -> list[bytes]:
        if job.prompt == "crash":
            raise RuntimeError("CUDA exploded at /secret/weights.bin")
        await self.release.wait()
        return [render(job.prompt, job.width, job.height)]


def _body(prompt: str) -> dict[str, object]:
    return {"prompt": prompt, "size": "256x256", "response_format": "b64_json"}


async def test_crash_is_a_500_envelope_and_service_keeps_serving(
    make_settings: SettingsFactory, open_client: ClientFactory, openai_schema: SchemaCheck
) -> None:
    async with open_client(build_app(make_settings(), backend=FakeBackend())) as client:
        crashed = await client.post(GENERATE, json=_body("crash"))
        after = await client.post(GENERATE, json=_body("fine"))
        metrics = (await client.get("/metrics")).text
    assert crashed.status_code == 500
    openai_schema("ErrorResponse", crashed.json())
    error = crashed.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "generation_failed")
    assert crashed.headers["x-request-id"] in error["message"]
    assert "secret" not in crashed.text
    assert "Traceback" not in crashed.text
    assert after.status_code == 200
    assert 'nexus_images_generations_total{backend="fake",outcome="error"} 1.0' in metrics


async def _wait_pending(state: ImagesState, count: int) -> None:
    for _ in range(500):
        if state.generator.pending == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never saw {count} pending generations")


async def test_full_queue_is_429_then_queued_work_finishes(
    make_settings: SettingsFactory, open_client: ClientFactory, openai_schema: SchemaCheck
) -> None:
    backend = FakeBackend(hold=True)
    app = build_app(make_settings(images_queue_size=1), backend=backend)
    async with open_client(app) as client:
        # One generation runs, one waits in the queue of size 1: the third is refused.
        first = asyncio.create_task(client.post(GENERATE, json=_body("one")))
        second = asyncio.create_task(client.post(GENERATE, json=_body("two")))
        await _wait_pending(app.state.images, 2)
        refused = await client.post(GENERATE, json=_body("three"))
        backend.release.set()
        done = await asyncio.gather(first, second)
        metrics = (await client.get("/metrics")).text
    assert refused.status_code == 429
    openai_schema("ErrorResponse", refused.json())
    assert refused.json()["error"]["code"] == "queue_full"
    assert int(refused.headers["retry-after"]) >= 1
    assert [r.status_code for r in done] == [200, 200]
    assert 'nexus_images_generations_total{backend="fake",outcome="rejected"} 1.0' in metrics
