"""What the commands share: progress rendering on a terminal or in a log, and a cancel on Ctrl-C."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

from bootmedia.progress import Progress, Reporter, human_bytes, human_duration


class ProgressPrinter:
    """A live one-line bar on a TTY; plain lines (one per step, then every 10 s) otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last_step = ""
        self.last_line = 0.0

    def __call__(self, p: Progress) -> None:
        pct = f"{100 * p.fraction:5.1f}%" if p.total else "  -  "
        rate = f"{human_bytes(p.rate)}/s" if p.rate else "-"
        text = (
            f"{pct} {human_bytes(p.done)}/{human_bytes(p.total)} {rate} "
            f"ETA {human_duration(p.eta)}  {p.step}"
        )
        if p.message:
            self._line(p.message)
        if self.tty:
            width = shutil.get_terminal_size((80, 24)).columns - 1
            self.stream.write("\r" + text[:width].ljust(width))
            self.stream.flush()
        elif p.step != self.last_step or time.monotonic() - self.last_line > 10:
            self.last_step = p.step
            self._line(text)

    def _line(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r" + " " * (shutil.get_terminal_size((80, 24)).columns - 1) + "\r")
        self.stream.write(text + "\n")
        self.last_line = time.monotonic()
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def reporter(quiet: bool = False) -> tuple[Reporter, ProgressPrinter | None]:
    if quiet:
        return Reporter(), None
    printer = ProgressPrinter()
    return Reporter(callback=printer), printer
