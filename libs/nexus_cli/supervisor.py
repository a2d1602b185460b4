"""One child process of ``nexus up``: started in its own process group, its output streamed
line by line behind its name, stopped with SIGTERM and, if it will not go, SIGKILL.

Each child leads its own process group so a signal reaches everything it started (a worker,
a helper program) and so the terminal's Ctrl-C reaches only ``nexus up``, which then stops
the children in the order the stack needs. On Linux each child also gets SIGTERM if
``nexus up`` itself dies without cleaning up (SIGKILL, a crash), so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .output import Output

_LINE_LIMIT = 1 << 20  # a longer line is shown in pieces rather than breaking the pump
_PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when ``nexus up`` dies.

    The libc function is looked up here, before any fork: between fork and exec the child
    may only make the call itself.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    return arm


_PREEXEC = _parent_death_signal()


class Child:
    def __init__(self, name: str, proc: asyncio.subprocess.Process, out: Output) -> None:
        self.name = name
        self.proc = proc
        self.out = out
        assert proc.stdout is not None
        self._pump = asyncio.create_task(self._stream(proc.stdout), name=f"log-{name}")

    @classmethod
    async def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        out: Output,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        new_session: bool = False,
    ) -> Child:
        """Start ``argv`` (raises ``OSError`` when it cannot be executed at all).

        ``new_session`` also detaches it from the terminal (etcd: no terminal signal at all).
        """
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=asyncio.subprocess.DEVNULL,  # nothing of ours reads the terminal
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=_LINE_LIMIT,
            start_new_session=new_session,
            process_group=None if new_session else 0,
            preexec_fn=_PREEXEC,
        )
        return cls(name, proc, out)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    async def wait(self) -> int:
        return await self.proc.wait()

    def signal_group(self, sig: int) -> None:
        """Signal the child's whole process group (it leads it: the group id is its pid).

        Also works after the leader exited, reaching anything it left behind: Linux does not
        hand out a pid again while a process group of that id still has members.
        """
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def stop(self, grace_s: float, hurry: asyncio.Event | None = None) -> int:
        """SIGTERM, wait up to ``grace_s`` (less if ``hurry`` is set), then SIGKILL."""
        self.signal_group(signal.SIGTERM)
        waiter = asyncio.ensure_future(self.proc.wait())
        racers: set[asyncio.Future[Any]] = {waiter}
        if hurry is not None:
            racers.add(asyncio.ensure_future(hurry.wait()))
        _, pending = await asyncio.wait(racers, timeout=grace_s, return_when="FIRST_COMPLETED")
        for task in pending - {waiter}:
            task.cancel()
        if not waiter.done():
            self.out.notice(f"{self.name}: still running after SIGTERM; sending SIGKILL")
        # SIGKILL the group either way: the leader may be gone but leave children behind.
        self.signal_group(signal.SIGKILL)
        code = await waiter
        await self.drain_log()
        return code

    async def drain_log(self, timeout_s: float = 2.0) -> None:
        """Let the pump print what is left; give up if a leftover holds the pipe open."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._pump), timeout_s)
        self._pump.cancel()

    async def _stream(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as eof:
                raw = eof.partial  # the last line had no newline
            except asyncio.LimitOverrunError as long:
                raw = await reader.readexactly(long.consumed)
            if not raw:
                return
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            self.out.log(self.name, text)
