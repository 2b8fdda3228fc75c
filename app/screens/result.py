"""Where every job ends: its outcome, and (for a crash) the reason and where the log is."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Static

from app.jobs import Outcome
from app.screens.base import BaseScreen
from app.wrap import fit_lines


class ResultScreen(BaseScreen[None]):
    """The outcome of a job. Enter/Esc return to the menu. With `afterwards` set to reboot or
    poweroff after a good run, counts down first so the technician can still stay."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "back", "Done", key_display="Enter"),
        Binding("escape", "stay", "Stay", key_display="Esc"),
    ]
    COUNTDOWN = 10

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # "Stay" only while a reboot or power-off counts down. Without one, Esc does nothing
        # here: an Esc meant for "Cancel?" that lands as the job ends must not hide the result.
        if action == "stay":
            return self.afterwards != "stay"
        return True

    def __init__(self, outcome: Outcome, title: str, afterwards: str = "stay") -> None:
        super().__init__(title)
        self.outcome = outcome
        self.afterwards = afterwards if outcome.ok else "stay"
        self.remaining = self.COUNTDOWN

    def compose_body(self) -> ComposeResult:
        o = self.outcome
        mark = "OK" if o.ok else ("CANCELLED" if o.cancelled else "FAILED")
        with VerticalScroll(classes="pane", id="result"):
            yield Static(f"{mark}: {o.title}", id="headline", classes="ok" if o.ok else "danger")
            if o.report_path:
                # Right under the headline: a wipe report is longer than the screen, and the
                # technician must not have to scroll to learn where it was saved.
                yield Static(f"Report saved to {o.report_path}", id="report")
            width = self.app.size.width - 6  # borders, padding and the scrollbar's place
            lines = fit_lines(o.lines, width)
            yield Static(Text("\n".join(lines), no_wrap=True, overflow="fold"), id="details")
            yield Static("", id="countdown", classes="heading")

    def on_mount(self) -> None:
        self.query_one("#result").border_title = "Result"
        if self.afterwards != "stay":
            self.tick()
            self.set_interval(1.0, self.tick, name="countdown")

    def tick(self) -> None:
        if self.afterwards == "stay":
            return
        verb = "Rebooting" if self.afterwards == "reboot" else "Powering off"
        if self.remaining <= 0:
            what, self.afterwards = self.afterwards, "stay"
            self.query_one("#countdown", Static).update(f"{verb}...")
            self.bm.power(what)
            return
        self.query_one("#countdown", Static).update(
            f"{verb} in {self.remaining} s. Press Esc to stay."
        )
        self.remaining -= 1

    def action_stay(self) -> None:
        if self.afterwards != "stay":
            self.afterwards = "stay"
            self.query_one("#countdown", Static).update("Staying. Enter returns to the menu.")
            self.refresh_bindings()


class ErrorScreen(BaseScreen[None]):
    """A job crashed (a bug, not a BootmediaError): the reason and the log, no traceback."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "back", "Back to menu", key_display="Enter")
    ]

    def __init__(
        self, reason: str, log_path: str, headline: str = "Something went wrong inside bootmedia."
    ) -> None:
        super().__init__("Error")
        self.reason = reason
        self.log_path = log_path
        self.headline = headline

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(classes="pane", id="error"):
            yield Static(self.headline, classes="danger")
            yield Static(f"\n{self.reason}\n", id="reason")
            yield Static(
                f"The full details are in the log: {self.log_path}\n"
                "Press l on the menu to read it, or send that file with a bug report."
            )

    def on_mount(self) -> None:
        self.query_one("#error").border_title = "Error"
