"""``POST /v1/audio/speech``: OpenAI's text-to-speech endpoint, streamed as it is spoken."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from nexus_kit import ModelNotFoundError, endpoint_flags

from .backends import SpeechJob
from .encoding import CONTENT_TYPES
from .schemas import SpeechRequest
from .speech import Synthesis, sse_events
from .state import tts_state

router = APIRouter()

_AUDIO: dict[str, Any] = {
    "content": {media: {} for media in {*CONTENT_TYPES.values(), "text/event-stream"}}
}


@router.post(
    "/v1/audio/speech",
    operation_id="audio.speech",
    summary="Generate audio from text",
    response_class=StreamingResponse,
    responses={200: _AUDIO},
    openapi_extra=endpoint_flags(streaming=True),
)
async def create_speech(body: SpeechRequest, request: Request) -> StreamingResponse:
    tts = tts_state(request)
    if body.model not in tts.catalog.model_ids():
        raise ModelNotFoundError(body.model)
    encoder = tts.encoders.make(body.response_format)  # 400 when this machine cannot
    backend = tts.engine.ready_backend()  # 503 while loading or when none can run
    job = SpeechJob(text=body.input, voice=body.voice, speed=body.speed)
    synthesis = Synthesis(backend, job, body.response_format, tts.metrics)
    await synthesis.start()  # a backend failing at once is a clean 500, not a cut stream
    audio = encoder.encode(synthesis.pcm())
    if body.stream_format == "sse":
        events = sse_events(audio, synthesis)
        return StreamingResponse(events, media_type="text/event-stream", headers=_NO_CACHE)
    return StreamingResponse(audio, media_type=CONTENT_TYPES[body.response_format])


_NO_CACHE = {"Cache-Control": "no-cache"}
