"""The Log screen: the job log, the same file a technician sends with a bug report.

The file is shared by every bootmedia process (this TUI, a CLI job typed in the shell, an
unattended run), and holds DEBUG lines. The screen shows this session's lines (its pid, see
bootmedia/log.py) from INFO up; `a` shows the whole file, every process and level."""

from __future__ import annotations

import os
import re
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import RichLog

from app.messages import Loaded, LoadFailed
from app.screens.base import BaseScreen
from bootmedia.errors import BootmediaError

TAIL_BYTES = 256 << 10
# "2026-12-01 23:42:10,123 INFO [4242] bootmedia.apply: ..." (bootmedia/log.py's format)
RECORD = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (?P<level>[A-Z]+) \[(?P<pid>\d+)\] ")
QUIET = frozenset({"DEBUG"})


def session_lines(text: str, pid: int) -> str:
    """The records of process `pid` from INFO up, with their continuation lines (tracebacks)."""
    keep, out = False, []
    for line in text.splitlines():
        m = RECORD.match(line)
        if m is not None:  # a record; a continuation line (traceback) follows its record
            keep = int(m["pid"]) == pid and m["level"] not in QUIET
        if keep:
            out.append(line)
    return "\n".join(out)


class LogScreen(BaseScreen[None]):
    TITLE_TEXT = "Log"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        Binding("f5", "refresh", "Reload", key_display="F5"),
        Binding("a", "toggle_all", "All processes"),
    ]
    everything = False  # a: every process's lines, DEBUG too

    def compose_body(self) -> ComposeResult:
        yield RichLog(id="log", wrap=True, markup=False, highlight=False)

    def on_mount(self) -> None:
        self.action_refresh()

    def action_toggle_all(self) -> None:
        self.everything = not self.everything
        self.action_refresh()

    def action_refresh(self) -> None:
        self.run_blocking("log", self.read_tail)

    def read_tail(self) -> str:
        try:
            with open(self.session.log_path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - TAIL_BYTES))
                text = f.read().decode(errors="replace")
        except OSError as exc:
            raise BootmediaError(f"cannot read {self.session.log_path}: {exc.strerror}") from None
        return text if self.everything else session_lines(text, os.getpid())

    def on_loaded(self, message: Loaded) -> None:
        log = self.query_one(RichLog)
        log.clear()
        pid = os.getpid()
        log.border_title = (
            "every process, every level"  # the path is on the status line: a title is cut
            if self.everything
            else f"this session (pid {pid}), INFO and up"
        )
        # The width it wraps at, given: before its first layout RichLog wraps at the screen's
        # width, and the ends of long lines fell under its border ("gold" for "golden").
        width = log.scrollable_content_region.width or self.app.size.width - 4
        log.write(message.value or "(nothing logged yet)", width=width)
        log.scroll_end(animate=False)
        log.focus()
        other = "this session only" if self.everything else "every process and level"
        self.status(f"a shows {other}. The file: {self.session.log_path}")

    def on_load_failed(self, message: LoadFailed) -> None:
        self.status(message.reason, error=True)
