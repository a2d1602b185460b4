"""PCM → the file format the client asked for, as a stream of bytes.

- ``pcm``: the PCM itself (24 kHz s16le mono). ``wav``: a header with maximal sizes, then PCM
  (the length is unknown while streaming; every common decoder reads to the end of data).
- ``mp3`` and ``opus``: libsndfile (``soundfile``) encoders fed block by block; the bytes it
  writes are passed on at once. libsndfile seeks back at close to patch headers, which a
  stream cannot honour, so MP3 is constant-bitrate (a decoder then needs no Xing length tag)
  and Ogg Opus needs no patch.
- ``flac``: libsndfile too, but sent whole at the end: FLAC's STREAMINFO holds the length, and
  without it libsndfile (so ``soundfile`` users) cannot read the file at all.
- ``aac``: ``ffmpeg`` (ADTS stream, flushed per packet) when it is on PATH. ffmpeg also stands
  in for mp3 or opus when this libsndfile build lacks them.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import soundfile

from nexus_kit import InvalidRequestError

from .audio import SAMPLE_RATE, SAMPLE_WIDTH
from .backends import BackendError
from .subprocesses import reap
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


class ForwardSink:
    """A file object for libsndfile whose bytes can be taken (sent) as they are written.

    Writes land in a buffer of not-yet-taken bytes; a later seek back and rewrite of bytes
    already taken (a header patch at close) is dropped, as it would be on a pipe.
    """

    def __init__(self) -> None:
        self._taken = 0
        self._pending = bytearray()
        self._pos = 0

    def write(self, data: Any) -> int:
        data = bytes(data)
        start = self._pos
        self._pos += len(data)
        if start < self._taken:
            data, start = data[self._taken - start :], self._taken
        offset = start - self._taken
        if offset > len(self._pending):
            self._pending.extend(b"\0" * (offset - len(self._pending)))
        self._pending[offset : offset + len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        size = self._taken + len(self._pending)
        self._pos = offset + (0, self._pos, size)[whence]
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        return b""  # write-only: libsndfile only probes

    def take(self) -> bytes:
        out = bytes(self._pending)
        self._taken += len(out)
        self._pending.clear()
        return out


@dataclass(frozen=True)
class SoundfileFormat:
    format: str
    subtype: str
    streams: bool = True
    options: dict[str, Any] = field(default_factory=dict)


SOUNDFILE_FORMATS = {
    "mp3": SoundfileFormat(
        "MP3", "MPEG_LAYER_III", options={"bitrate_mode": "CONSTANT", "compression_level": 0.5}
    ),
    "opus": SoundfileFormat("OGG", "OPUS"),
    "flac": SoundfileFormat("FLAC", "PCM_16", streams=False),
}


class SoundfileEncoder(BlockEncoder):
    """libsndfile encoding, each block on a worker thread (it is CPU work)."""

    def __init__(self, spec: SoundfileFormat) -> None:
        self.spec = spec
        self._sink = ForwardSink()
        self._file: soundfile.SoundFile | None = None

    def _write(self, pcm: bytes) -> bytes:
        if self._file is None:
            self._file = soundfile.SoundFile(
                self._sink, "w", samplerate=SAMPLE_RATE, channels=1,
                format=self.spec.format, subtype=self.spec.subtype, **self.spec.options,
            )  # fmt: skip
        if pcm:
            self._file.write(np.frombuffer(pcm, dtype="<i2"))
        return self._sink.take() if self.spec.streams else b""

    def _close(self) -> bytes:
        if self._file is None or self._file.frames == 0:
            # libsndfile writes nothing at all for zero frames; 20 ms of silence is a file.
            self._write(bytes(SAMPLE_RATE // 50 * SAMPLE_WIDTH))
        assert self._file is not None
        self._file.close()
        return self._sink.take()

    async def feed(self, pcm: bytes) -> bytes:
        return await asyncio.to_thread(self._write, pcm)

    async def finish(self) -> bytes:
        return await asyncio.to_thread(self._close)

    async def aclose(self) -> None:
        if self._file is not None and not self._file.closed:
            await asyncio.to_thread(self._file.close)


FFMPEG_CODECS = {
    "aac": ["-c:a", "aac", "-b:a", "64k", "-f", "adts"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k", "-write_xing", "0", "-f", "mp3"],
    "opus": ["-c:a", "libopus", "-b:a", "32k", "-f", "ogg"],
}


class FfmpegEncoder:
    """An ``ffmpeg`` process: PCM written to stdin by a task, the stream read from stdout.

    Reading and writing run concurrently, so encoded bytes reach the client as ffmpeg emits
    them even while the backend is still thinking about the next PCM block.
    """

    def __init__(self, response_format: str, program: str = "ffmpeg") -> None:
        self.command = [
            program, "-hide_banner", "-loglevel", "error",
            # Raw PCM needs no probing; without this ffmpeg waits for ~5 s of input first.
            "-probesize", "32", "-analyzeduration", "0",
            "-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", "pipe:0",
            *FFMPEG_CODECS[response_format], "-flush_packets", "1", "pipe:1",
        ]  # fmt: skip

    async def encode(self, pcm: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        proc = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        writer = asyncio.create_task(_pump(pcm, proc.stdin))
        errors = asyncio.create_task(proc.stderr.read())
        try:
            while chunk := await proc.stdout.read(16384):
                yield chunk
            if code := await proc.wait():
                detail = (await errors).decode(errors="replace").strip()[:200]
                raise BackendError(f"ffmpeg exited with {code}: {detail}")
            await writer  # a failure of the PCM source surfaces here
        finally:
            for task in (writer, errors):
                task.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await task
            await reap(proc)


async def _pump(pcm: AsyncIterator[bytes], stdin: asyncio.StreamWriter) -> None:
    try:
        async with closing(pcm) as blocks:
            async for block in blocks:
                stdin.write(block)
                await stdin.drain()
    finally:
        stdin.close()  # ffmpeg then finishes the stream, even when ``pcm`` failed


class Encoders:
    """Which formats this machine can produce, and a fresh encoder per request."""

    def __init__(self, ffmpeg_program: str = "ffmpeg") -> None:
        self.ffmpeg = ffmpeg_program if shutil.which(ffmpeg_program) else None
        self.native = {name for name, spec in SOUNDFILE_FORMATS.items() if _libsndfile_has(spec)}

    @property
    def available(self) -> list[str]:
        via_ffmpeg = set(FFMPEG_CODECS) if self.ffmpeg else set()
        usable = {"wav", "pcm"} | self.native | via_ffmpeg
        return [f for f in CONTENT_TYPES if f in usable]

    def make(self, response_format: str) -> Encoder:
        if response_format == "pcm":
            return PcmEncoder()
        if response_format == "wav":
            return WavEncoder()
        if response_format in self.native:
            return SoundfileEncoder(SOUNDFILE_FORMATS[response_format])
        if self.ffmpeg and response_format in FFMPEG_CODECS:
            return FfmpegEncoder(response_format, self.ffmpeg)
        raise InvalidRequestError(
            f"response_format '{response_format}' is not available on this server (it needs "
            f"ffmpeg on PATH); available formats: {', '.join(self.available)}.",
            param="response_format",
            code="unsupported_response_format",
        )


def _libsndfile_has(spec: SoundfileFormat) -> bool:
    return spec.format in soundfile.available_formats() and spec.subtype in (
        soundfile.available_subtypes(spec.format)
    )
