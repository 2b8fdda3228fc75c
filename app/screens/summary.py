"""The last stop before a job runs: exactly what happens, the CLI command, typed confirmation.

The plan is built in a thread worker (it reads the repository and the disk); the screen shows it
when it arrives. Dismisses with the Job once confirmed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Static

from app.jobs import Job
from app.messages import Loaded, LoadFailed
from app.screens.base import BaseScreen
from app.widgets.confirm import ConfirmInput


class SummaryScreen(BaseScreen[Job]):
    """A job with a target disk needs the typed code; a job that only reads starts with Enter."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        Binding("enter", "start", "Start / confirm", key_display="Enter"),
    ]

    def __init__(self, title: str, build: Callable[[], Job]) -> None:
        super().__init__(title)
        self.build = build
        self.job: Job | None = None

    def compose_body(self) -> ComposeResult:
        yield VerticalScroll(Static("Checking...", id="checking"), classes="pane", id="summary")

    def on_mount(self) -> None:
        self.query_one("#summary").border_title = "What will happen"
        self.status("Checking the plan...")
        self.run_blocking("plan", self.build)

    def on_load_failed(self, message: LoadFailed) -> None:
        self.query_one("#checking", Static).update(
            f"[b red]Cannot do this:[/b red] {escape(message.reason)}"
        )
        self.status("Press Esc to go back and change something.", error=True)

    def on_loaded(self, message: Loaded) -> None:
        self.job = job = message.value
        box = self.query_one("#summary", VerticalScroll)
        box.remove_children()
        widgets: list[Static | ConfirmInput] = []
        if job.confirm is not None:
            d = job.confirm.disk
            widgets.append(
                Static(
                    f"EVERYTHING on {d.name} ({escape(d.label())}) will be overwritten.",
                    classes="danger",
                    id="warning",
                )
            )
        widgets.append(Static(escape("\n".join(job.summary)), id="plan"))
        if job.command:
            widgets.append(Static("Same job from the command line:", classes="heading"))
            widgets.append(Static(escape(job.command), id="command"))
        if job.confirm is not None:
            widgets.append(Static(""))
            widgets.append(
                ConfirmInput(job.confirm.confirm_code, job.confirm.confirm_prompt, id="confirm")
            )
            self.status("Nothing is written until you confirm.")
        else:
            widgets.append(Static("\nPress [b]Enter[/b] to start.", id="start-hint"))
            self.status("Nothing is written to a disk by this job.")
        box.mount(*widgets)
        if job.confirm is not None:
            self.call_after_refresh(self.query_one(ConfirmInput).focus_input)

    def on_confirm_input_confirmed(self, event: ConfirmInput.Confirmed) -> None:
        if self.job is not None:
            self.dismiss(self.job)

    def action_start(self) -> None:
        if self.job is None:
            return
        if self.job.confirm is None:
            self.dismiss(self.job)
        else:
            self.query_one(ConfirmInput).focus_input()
