"""The Log screen: the job log, the same file a technician sends with a bug report."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import RichLog

from app.messages import Loaded, LoadFailed
from app.screens.base import BaseScreen
from bootmedia.errors import BootmediaError

TAIL_BYTES = 256 << 10


class LogScreen(BaseScreen[None]):
    TITLE_TEXT = "Log"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        Binding("f5", "refresh", "Reload", key_display="F5"),
    ]

    def compose_body(self) -> ComposeResult:
        yield RichLog(id="log", wrap=True, markup=False, highlight=False)

    def on_mount(self) -> None:
        self.query_one("#log").border_title = str(self.session.log_path)
        self.action_refresh()

    def action_refresh(self) -> None:
        self.run_blocking("log", self.read_tail)

    def read_tail(self) -> str:
        try:
            with open(self.session.log_path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - TAIL_BYTES))
                return f.read().decode(errors="replace")
        except OSError as exc:
            raise BootmediaError(f"cannot read {self.session.log_path}: {exc.strerror}") from None

    def on_loaded(self, message: Loaded) -> None:
        log = self.query_one(RichLog)
        log.clear()
        log.write(message.value)
        log.scroll_end(animate=False)
        log.focus()
        self.status(f"{self.session.log_path}  (also where bug reports come from)")

    def on_load_failed(self, message: LoadFailed) -> None:
        self.status(message.reason, error=True)
