"""An unattended job announces itself and counts down, so a technician can still stop it."""

from __future__ import annotations

from typing import ClassVar

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Static

from app.screens.base import BaseScreen


class CountdownScreen(BaseScreen[bool]):
    """Dismisses True when the countdown runs out (or on Enter), None on Esc."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Stop: do not run it", key_display="Esc"),
        Binding("enter", "start", "Start now", key_display="Enter"),
    ]

    def __init__(self, lines: tuple[str, ...], seconds: int) -> None:
        super().__init__("Unattended job")
        self.lines = lines
        self.remaining = seconds

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="pane", id="job"):
            yield Static(escape("\n".join(self.lines)), id="describe")
            yield Static("", id="countdown", classes="heading danger")

    def on_mount(self) -> None:
        self.query_one("#job").border_title = "Unattended job"
        self.tick()
        self.set_interval(1.0, self.tick, name="countdown")

    def tick(self) -> None:
        if self.remaining <= 0:
            self.action_start()
            return
        self.query_one("#countdown", Static).update(
            f"Starting in {self.remaining} s. Press Esc to stop it and use the menu."
        )
        self.remaining -= 1

    def action_start(self) -> None:
        if self.is_current:
            self.dismiss(True)
