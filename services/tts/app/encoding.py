"""PCM → the file format the client asked for, as a stream of bytes.

- ``pcm``: the PCM itself (24 kHz s16le mono). ``wav``: a header with maximal sizes, then PCM
  (the length is unknown while streaming; every common decoder reads to the end of data).
- ``mp3``, ``aac`` (ADTS) and ``opus`` (Ogg): FFmpeg's encoders through PyAV (``av``), whose
  wheels bundle FFmpeg with lame, the native AAC encoder and libopus, so no ``ffmpeg`` program
  or system package is needed. The muxer writes into a write-only sink: FFmpeg then treats the
  output as a pipe (no seeking back to patch headers: MP3 goes without a Xing tag, which a
  constant-bitrate stream does not need) and every packet is flushed to the client as soon as
  it is muxed.
- ``flac``: PyAV too, but sent whole at the end: FLAC's STREAMINFO holds the length, written
  by seeking back at close, and without it libsndfile (so ``soundfile`` users) cannot read
  the file at all.

Encoding is CPU work: each block is encoded on a worker thread, one at a time per request.
"""

from __future__ import annotations

import asyncio
import io
import struct
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import av
import numpy as np

from nexus_kit import InvalidRequestError

from .audio import SAMPLE_RATE, SAMPLE_WIDTH
from .threads import closing

CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


class Encoder(Protocol):
    def encode(self, pcm: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The encoded file, chunk by chunk, as PCM comes in. Errors of ``pcm`` propagate."""
        ...


class BlockEncoder:
    """An encoder fed one PCM block at a time, returning whatever bytes are ready."""

    async def feed(self, pcm: bytes) -> bytes:
        return pcm

    async def finish(self) -> bytes:
        return b""

    async def aclose(self) -> None:
        return None

    async def encode(self, pcm: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async with closing(pcm) as blocks:
                async for block in blocks:
                    if out := await self.feed(block):
                        yield out
            if tail := await self.finish():
                yield tail
        finally:
            await self.aclose()


class PcmEncoder(BlockEncoder):
    """Raw 24 kHz s16le mono: the PCM as it comes."""


def wav_header(rate: int = SAMPLE_RATE) -> bytes:
    unknown = 0xFFFFFFFF  # streaming: the sizes are not known when the header goes out
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * SAMPLE_WIDTH, SAMPLE_WIDTH, 16)
    riff = b"RIFF" + struct.pack("<I", unknown) + b"WAVE"
    return riff + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", unknown)


class WavEncoder(BlockEncoder):
    def __init__(self) -> None:
        self._header: bytes | None = wav_header()

    def _take_header(self) -> bytes:
        header, self._header = self._header or b"", None
        return header

    async def feed(self, pcm: bytes) -> bytes:
        return self._take_header() + pcm

    async def finish(self) -> bytes:
        return self._take_header()


class PipeSink:
    """A write-only file object for PyAV: no ``seek``, so FFmpeg writes it as it would a pipe."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._pending += view
        return view.nbytes

    def take(self) -> bytes:
        out = bytes(self._pending)
        self._pending.clear()
        return out


@dataclass(frozen=True)
class AvFormat:
    container: str  # FFmpeg muxer name
    codec: str  # FFmpeg encoder name
    rate: int = SAMPLE_RATE  # the encoder's rate; PyAV resamples when it differs
    bitrate: int | None = None
    streams: bool = True  # False: the muxer seeks back at close, so the file goes out whole


AV_FORMATS: dict[str, AvFormat] = {
    "mp3": AvFormat("mp3", "libmp3lame", bitrate=64_000),
    "aac": AvFormat("adts", "aac", bitrate=64_000),
    # page_duration: an Ogg page per 100 ms of audio instead of per second, so it streams.
    "opus": AvFormat("ogg", "libopus", bitrate=32_000),
    "flac": AvFormat("flac", "flac", streams=False),
}
CONTAINER_OPTIONS: dict[str, dict[str, str]] = {"ogg": {"page_duration": "100000"}}


class AvEncoder(BlockEncoder):
    """One PyAV output container and audio stream per request."""

    def __init__(self, spec: AvFormat, codec: str | None = None) -> None:
        self.spec = spec
        self.codec = codec or spec.codec
        self._sink: PipeSink | io.BytesIO = PipeSink() if spec.streams else io.BytesIO()
        self._container: Any = None
        self._stream: Any = None
        self._samples = 0

    def _open(self) -> None:
        options = {"flush_packets": "1", **CONTAINER_OPTIONS.get(self.spec.container, {})}
        self._container = av.open(
            self._sink, mode="w", format=self.spec.container, container_options=options
        )
        stream = self._container.add_stream(self.codec, rate=self.spec.rate, layout="mono")
        if self.spec.bitrate:
            stream.bit_rate = self.spec.bitrate
        self._stream = stream

    def _take(self) -> bytes:
        return self._sink.take() if isinstance(self._sink, PipeSink) else b""

    def _mux(self, frame: av.AudioFrame | None) -> None:
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def _write(self, pcm: bytes) -> bytes:
        if self._container is None:
            self._open()
        if pcm:
            samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = self._samples
            self._samples += samples.shape[1]
            self._mux(frame)
        return self._take()

    def _close(self) -> bytes:
        if self._samples == 0:
            # An encoder given nothing writes a header at most; 20 ms of silence is a file.
            self._write(bytes(SAMPLE_RATE // 50 * SAMPLE_WIDTH))
        self._mux(None)  # drain the encoder's delay line
        self._container.close()
        self._container = None
        if isinstance(self._sink, io.BytesIO):
            return self._sink.getvalue()
        return self._take()

    async def feed(self, pcm: bytes) -> bytes:
        return await asyncio.to_thread(self._write, pcm)

    async def finish(self) -> bytes:
        return await asyncio.to_thread(self._close)

    async def aclose(self) -> None:
        if self._container is not None:  # the client left or the source failed mid-stream
            container, self._container = self._container, None
            await asyncio.to_thread(container.close)


def has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except (av.error.FFmpegError, ValueError):
        return False
    return True


class Encoders:
    """Which formats this machine can produce, and a fresh encoder per request.

    ``codecs`` overrides the FFmpeg encoder of a format (e.g. ``{"mp3": "mp3_shine"}``); a
    format whose encoder this PyAV build lacks is left out of ``available`` and answered 400.
    """

    def __init__(self, codecs: Mapping[str, str] | None = None) -> None:
        self.codecs = {name: spec.codec for name, spec in AV_FORMATS.items()} | dict(codecs or {})
        self.encoded = {name for name, codec in self.codecs.items() if has_encoder(codec)}

    @property
    def available(self) -> list[str]:
        usable = {"wav", "pcm"} | self.encoded
        return [f for f in CONTENT_TYPES if f in usable]

    def make(self, response_format: str) -> Encoder:
        if response_format == "pcm":
            return PcmEncoder()
        if response_format == "wav":
            return WavEncoder()
        if response_format in self.encoded:
            return AvEncoder(AV_FORMATS[response_format], self.codecs[response_format])
        raise InvalidRequestError(
            f"response_format '{response_format}' is not available on this server (its "
            f"encoder is missing from this FFmpeg build); available formats: "
            f"{', '.join(self.available)}.",
            param="response_format",
            code="unsupported_response_format",
        )
