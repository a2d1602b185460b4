"""Each response format from real encoders (libsndfile, ffmpeg), decoded and measured."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import numpy as np
import pytest

from app.audio import SAMPLE_RATE, to_pcm16
from app.backends.stub import tone
from app.encoding import (
    CONTENT_TYPES,
    SOUNDFILE_FORMATS,
    Encoders,
    FfmpegEncoder,
    ForwardSink,
    SoundfileEncoder,
    wav_header,
)
from tests.tts_support import assert_audible, collect, decode

SECONDS = 2.0
FORMATS = ["mp3", "opus", "aac", "flac", "wav", "pcm"]


async def tone_blocks(seconds: float = SECONDS, block_s: float = 0.1) -> AsyncIterator[bytes]:
    for index in range(int(seconds / block_s)):
        yield to_pcm16(tone(block_s, 330.0 + index))


@pytest.mark.parametrize("response_format", FORMATS)
async def test_every_format_decodes_to_the_audio_fed_in(response_format: str) -> None:
    encoder = Encoders().make(response_format)
    data = await collect(encoder.encode(tone_blocks()))
    samples, rate = decode(data, response_format)
    assert rate == SAMPLE_RATE
    # Lossy codecs pad a frame or two at each end.
    assert_audible(samples, rate, SECONDS - 0.01, SECONDS + 0.15)


def test_content_types() -> None:
    assert CONTENT_TYPES == {
        "mp3": "audio/mpeg",
        "opus": "audio/ogg",
        "aac": "audio/aac",
        "flac": "audio/flac",
        "wav": "audio/wav",
        "pcm": "audio/pcm",
    }


def test_wav_header_is_canonical_with_unknown_sizes() -> None:
    header = wav_header()
    assert len(header) == 44
    assert header[:4] == b"RIFF"
    assert header[8:16] == b"WAVEfmt "
    assert struct.unpack("<HHIIHH", header[20:36]) == (1, 1, 24000, 48000, 2, 16)
    assert header[36:40] == b"data"
    assert struct.unpack("<I", header[40:44])[0] == 0xFFFFFFFF


@pytest.mark.parametrize("response_format", ["mp3", "opus"])
async def test_streaming_formats_emit_bytes_before_the_input_ends(response_format: str) -> None:
    encoder = SoundfileEncoder(SOUNDFILE_FORMATS[response_format])
    emitted_early = 0
    async for block in tone_blocks(3.0):
        emitted_early += len(await encoder.feed(block))
    tail = await encoder.finish()
    assert emitted_early > len(tail)  # most of the file left before the input ended


async def test_flac_is_sent_whole_so_its_header_carries_the_length() -> None:
    encoder = SoundfileEncoder(SOUNDFILE_FORMATS["flac"])
    assert [await encoder.feed(b) async for b in tone_blocks(0.5)] == [b""] * 5
    data = await encoder.finish()
    samples, _ = decode(data, "flac")
    assert len(samples) == int(0.5 * SAMPLE_RATE)


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac"])
async def test_ffmpeg_encoders_stand_in_for_libsndfile(response_format: str) -> None:
    data = await collect(FfmpegEncoder(response_format).encode(tone_blocks()))
    samples, rate = decode(data, response_format)
    assert_audible(samples, rate, SECONDS - 0.01, SECONDS + 0.15)


async def test_ffmpeg_passes_on_a_failure_of_the_pcm_source() -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield to_pcm16(tone(0.5, 300.0))
        raise RuntimeError("backend died")

    with pytest.raises(RuntimeError, match="backend died"):
        await collect(FfmpegEncoder("aac").encode(failing()))


async def test_empty_audio_is_still_a_valid_file() -> None:
    async def nothing() -> AsyncIterator[bytes]:
        return
        yield b""

    for response_format in ("wav", "flac", "mp3"):
        data = await collect(Encoders().make(response_format).encode(nothing()))
        samples, _ = decode(data, response_format)
        assert len(samples) < SAMPLE_RATE // 10


def test_forward_sink_drops_rewrites_of_bytes_already_sent() -> None:
    sink = ForwardSink()
    sink.write(b"head")
    assert sink.take() == b"head"
    sink.write(b"body")
    sink.seek(0)
    sink.write(b"HEAD")  # a header patch at close: already sent, cannot be honoured
    sink.seek(0, 2)
    sink.write(b"!")
    assert sink.take() == b"body!"
    sink.write(b"xy")
    sink.seek(-2, 1)
    sink.write(b"XY")  # a rewrite of bytes not yet sent is kept
    assert sink.take() == b"XY"
    assert sink.tell() == 11


def test_pcm_is_raw_s16le() -> None:
    samples = np.array([0.25, -0.25], dtype=np.float32)
    assert to_pcm16(samples) == struct.pack("<hh", 8191, -8191)
