"""The espeak backend: the ``espeak-ng`` program (Debian package ``espeak-ng``).

The text goes in on stdin (no argv length limit, no option injection); WAV comes out on stdout
with ``--stdout`` and is read as espeak writes it, so the first words stream before the last
are synthesised. espeak speaks at 22.05 kHz (16 kHz for mbrola voices): the header's rate is
read and the audio resampled to 24 kHz. Speed maps to words per minute; below espeak's floor
of 80 wpm the rest of the slowdown is a pitch-preserving time stretch.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Mapping

from app.audio import LinearResampler, from_pcm16, to_pcm16
from app.backends import BackendError, SpeechJob
from app.stretch import TimeStretch
from app.subprocesses import reap
from app.threads import closing

DEFAULT_VOICES: dict[str, str] = {
    "alloy": "en-us+f4",
    "ash": "en-us+m3",
    "ballad": "en-gb-x-rp+m4",
    "coral": "en-us+f2",
    "echo": "en-us+m2",
    "fable": "en-gb-x-rp+m1",
    "onyx": "en-us+m7",
    "nova": "en-us+f3",
    "sage": "en-gb+f4",
    "shimmer": "en-us+f5",
    "verse": "en-us+m5",
    "marin": "en-gb+f2",
    "cedar": "en-us+m6",
}
DEFAULT_WPM = 175
MIN_WPM, MAX_WPM = 80, 700  # espeak's floor; above 450 it speeds up with libsonic
READ_SIZE = 8192


def rate_for(speed: float) -> tuple[int, float]:
    """espeak words per minute for ``speed``, and the stretch left for us to do (1 = none)."""
    wpm = round(DEFAULT_WPM * speed)
    if wpm < MIN_WPM:
        return MIN_WPM, DEFAULT_WPM * speed / MIN_WPM
    return min(wpm, MAX_WPM), 1.0


async def read_wav_header(stream: asyncio.StreamReader) -> int:
    """Consume a WAV header up to the data chunk; return the sample rate (s16 mono expected)."""
    riff = await stream.readexactly(12)
    if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        raise BackendError("espeak-ng did not write WAV on stdout")
    rate = 0
    while True:
        chunk_id, size = struct.unpack("<4sI", await stream.readexactly(8))
        if chunk_id == b"data":
            break
        body = await stream.readexactly(size + (size & 1))
        if chunk_id == b"fmt ":
            _, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if channels != 1 or bits != 16:
                raise BackendError(f"espeak-ng wrote {channels} channels of {bits}-bit audio")
    if not rate:
        raise BackendError("espeak-ng's WAV header has no fmt chunk")
    return rate


class EspeakBackend:
    name = "espeak"
    models: tuple[str, ...] = ("espeak-ng",)
    native_speed = True

    def __init__(self, program: str = "espeak-ng", voices: Mapping[str, str] | None = None):
        self.program = program
        self.voices = {**DEFAULT_VOICES, **(voices or {})}

    def unavailable_reason(self) -> str | None:
        if shutil.which(self.program) is None:
            return f"program {self.program!r} not found on PATH (Debian package espeak-ng)"
        return None

    async def load(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            self.program, "--version", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise BackendError(f"{self.program} --version exited with {proc.returncode}: {out!r}")

    def command(self, job: SpeechJob) -> list[str]:
        wpm, _ = rate_for(job.speed)
        voice = self.voices.get(job.voice, DEFAULT_VOICES["alloy"])
        return [self.program, "--stdout", "-b", "1", "-v", voice, "-s", str(wpm)]

    async def synthesize(self, job: SpeechJob) -> AsyncGenerator[bytes, None]:
        proc = await asyncio.create_subprocess_exec(
            *self.command(job),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        errors = asyncio.create_task(proc.stderr.read())
        try:
            await _send_text(proc.stdin, job.text)
            async with closing(self._read_audio(proc.stdout, job.speed)) as audio:
                async for pcm in audio:
                    yield pcm
            code = await proc.wait()
            if code != 0:
                detail = (await errors).decode(errors="replace").strip()[:200]
                raise BackendError(f"{self.program} exited with {code}: {detail}")
        finally:
            errors.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await errors  # settled before reap() reads stderr itself
            await reap(proc)  # the client went away, or we failed: stop espeak

    async def _read_audio(self, stdout: asyncio.StreamReader, speed: float) -> AsyncIterator[bytes]:
        try:
            resampler = LinearResampler(await read_wav_header(stdout))
        except asyncio.IncompleteReadError:
            return  # no audio at all: espeak failed, and its exit code will say so
        _, stretch_factor = rate_for(speed)
        stretch = TimeStretch(stretch_factor) if stretch_factor != 1.0 else None
        carry = b""
        while chunk := await stdout.read(READ_SIZE):
            chunk, carry = _whole_samples(carry + chunk)
            samples = resampler.feed(from_pcm16(chunk))
            if stretch is not None:
                samples = stretch.feed(samples)
            if len(samples):
                yield to_pcm16(samples)
        if stretch is not None:
            yield to_pcm16(stretch.flush())

    def voice_map(self) -> Mapping[str, str]:
        return dict(self.voices)

    async def aclose(self) -> None:
        return None


async def _send_text(stdin: asyncio.StreamWriter, text: str) -> None:
    # A program that died at once (bad voice) closes its stdin: its exit code tells why.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(text.encode())
        await stdin.drain()
        stdin.close()


def _whole_samples(data: bytes) -> tuple[bytes, bytes]:
    cut = len(data) - len(data) % 2
    return data[:cut], data[cut:]
