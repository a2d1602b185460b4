"""Ending a child process (espeak-ng, ffmpeg) whose output nobody will read any more."""

from __future__ import annotations

import asyncio
import contextlib


async def reap(proc: asyncio.subprocess.Process) -> None:
    """Kill ``proc`` if it still runs, then drain its pipes to EOF and collect its status.

    Killing is not enough: a pipe still holding unread output keeps its transport open (a
    leaked file descriptor, and a ResourceWarning under uvloop) until it is read to the end.
    """
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    if proc.stdin is not None:
        proc.stdin.close()
    await proc.communicate()
