"""Each response format from real encoders (FFmpeg's, through PyAV), decoded and measured."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import numpy as np
import pytest

from app.audio import SAMPLE_RATE, to_pcm16
from app.backends.stub import tone
from app.encoding import AV_FORMATS, CONTENT_TYPES, AvEncoder, Encoders, PipeSink, wav_header
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


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac"])
async def test_streaming_formats_emit_bytes_before_the_input_ends(response_format: str) -> None:
    encoder = AvEncoder(AV_FORMATS[response_format])
    emitted_early = 0
    async for block in tone_blocks(3.0):
        emitted_early += len(await encoder.feed(block))
    tail = await encoder.finish()
    assert emitted_early > 4 * len(tail)  # most of the file left before the input ended


async def test_flac_is_sent_whole_so_its_header_carries_the_length() -> None:
    encoder = AvEncoder(AV_FORMATS["flac"])
    assert [await encoder.feed(b) async for b in tone_blocks(0.5)] == [b""] * 5
    data = await encoder.finish()
    samples, _ = decode(data, "flac")
    assert len(samples) == int(0.5 * SAMPLE_RATE)


def test_pipe_sink_hands_over_what_was_written_once() -> None:
    sink = PipeSink()
    sink.write(b"head")
    sink.write(memoryview(b"body"))
    assert sink.take() == b"headbody"
    assert sink.take() == b""
    assert not hasattr(sink, "seek")  # FFmpeg must see a pipe: no header patches at close


def test_pcm_is_raw_s16le() -> None:
    samples = np.array([0.25, -0.25], dtype=np.float32)
    assert to_pcm16(samples) == struct.pack("<hh", 8191, -8191)
