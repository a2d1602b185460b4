"""What ``nexus up`` writes: service log lines behind a padded name, its own notices, the table.

Everything goes to one stream (stdout) so the order a reader sees is the order things
happened. Colour only when that stream is a terminal and ``NO_COLOR`` is unset: logs written
to a file or read by CI stay plain text.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

SELF = "nexus"  # the prefix of the supervisor's own lines

_RESET = "\x1b[0m"
_BOLD = "1"
_PALETTE = ("36", "33", "35", "32", "34", "96", "93", "95", "92", "94")
_STATE_COLOURS = {"ready": "32", "not ready": "33"}  # anything else is a failure: red


def wants_colour(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; no trailing blanks."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


class Output:
    def __init__(self, stream: TextIO | None = None, colour: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.colour = wants_colour(self.stream) if colour is None else colour
        self.width = len(SELF)
        self._colours: dict[str, str] = {SELF: _BOLD}

    def register(self, names: Iterable[str]) -> None:
        """Give each name a colour and pad every prefix to the longest, so logs line up."""
        for name in names:
            self.width = max(self.width, len(name))
            self._colours.setdefault(name, _PALETTE[(len(self._colours) - 1) % len(_PALETTE)])

    def paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}{_RESET}" if self.colour else text

    def prefix(self, name: str) -> str:
        return self.paint(f"{name:<{self.width}} |", self._colours.get(name, _BOLD))

    def log(self, name: str, text: str) -> None:
        self.write(f"{self.prefix(name)} {text}")

    def notice(self, text: str) -> None:
        self.log(SELF, text)

    def table(self, rows: Sequence[tuple[str, str, str]]) -> None:
        """NAME / URL / STATE, the state coloured (ready green, not ready yellow, else red)."""
        lines = format_table(("NAME", "URL", "STATE"), rows)
        self.write("")
        self.write("  " + self.paint(lines[0], _BOLD))
        for line, (_, _, state) in zip(lines[1:], rows, strict=True):
            head = line[: len(line) - len(state)]
            self.write("  " + head + self.paint(state, _STATE_COLOURS.get(state, "31")))
        self.write("")

    def write(self, line: str) -> None:
        try:
            self.stream.write(line + "\n")
            self.stream.flush()  # a file or pipe reader sees each line as it happens
        except (OSError, ValueError):
            # The reader went away (``nexus up | head``, a closed terminal): keep supervising
            # so the services are still stopped in order; only the printing stops.
            pass
