"""The last stop before a job runs: exactly what happens, the CLI command, typed confirmation.

The plan is built in a thread worker (it reads the repository and the disk); the screen shows it
when it arrives. Dismisses with the Job once confirmed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from app import engine
from app.jobs import Job
from app.messages import Loaded, LoadFailed
from app.screens.base import BaseScreen
from app.widgets.confirm import ConfirmInput
from app.wrap import fit_lines, wrap_command


class SummaryScreen(BaseScreen[Job]):
    """A job with a target disk needs the typed code; a job that only reads starts with Enter."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        Binding("enter", "start", "Start / confirm", key_display="Enter"),
        Binding("pageup", "scroll_plan(-1)", "Scroll", show=False),
        Binding("pagedown", "scroll_plan(1)", "Scroll", show=False),
    ]

    def __init__(self, title: str, build: Callable[[], Job]) -> None:
        super().__init__(title)
        self.build = build
        self.job: Job | None = None

    DEFAULT_CSS = """
    SummaryScreen #summary { height: 1fr; }
    SummaryScreen #go { height: auto; padding: 0 1; }
    """

    def compose_body(self) -> ComposeResult:
        yield VerticalScroll(Static("Checking...", id="checking"), classes="pane", id="summary")
        yield Vertical(id="go")

    def on_mount(self) -> None:
        self.query_one("#summary").border_title = "What will happen"
        self.status("Checking the plan...")
        self.run_blocking("plan", self.build)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Enter is offered only once there is a plan to start (never on "Cannot do this").
        if action == "start":
            return self.job is not None
        return True

    def on_load_failed(self, message: LoadFailed) -> None:
        self.query_one("#checking", Static).update(
            f"[b red]Cannot do this:[/b red] {escape(message.reason)}"
        )
        self.status("Press Esc to go back and change something.", error=True)
        self.refresh_bindings()

    async def on_loaded(self, message: Loaded) -> None:
        self.job = job = message.value
        self.refresh_bindings()
        box = self.query_one("#summary", VerticalScroll)
        await box.remove_children()
        await box.mount(Static(self.plan_text(), id="plan"))
        go = self.query_one("#go", Vertical)
        if job.command:
            # Wrapped here, between words, into as many lines as it needs: an auto-height
            # Static mounted here was measured a line short, and cut the end (--confirm).
            lines = wrap_command(job.command, self.app.size.width - 2)
            text = Text("\n".join(lines), no_wrap=True, overflow="fold")
            text.stylize("dim", 0, len("Command line:"))
            await go.mount(Static(text, id="command"))
        if job.confirm is not None:
            d = job.confirm.disk
            await go.mount(
                Static(
                    f"EVERYTHING on {d.name} will be overwritten.", classes="danger", id="warning"
                ),
                ConfirmInput(job.confirm.confirm_code, job.confirm.confirm_prompt, id="confirm"),
            )
            self.status("Nothing is written until you confirm. PgUp/PgDn scroll the plan.")
        else:
            await go.mount(Static("Press [b]Enter[/b] to start.", id="start-hint"))
            self.status("This job writes to no disk.")
        if job.confirm is not None:
            self.query_one(ConfirmInput).focus_input()

    def plan_text(self) -> Text:
        """The plan fitted to the pane: table rows narrowed, long lines broken between
        phrases with their continuation indented (app/wrap.py); never wrapped again by Rich."""
        assert self.job is not None
        width = self.app.size.width - 6  # borders, padding and the scrollbar's place
        return Text("\n".join(fit_lines(self.job.summary, width)), no_wrap=True, overflow="fold")

    def on_resize(self) -> None:
        if self.job is not None and self.query("#plan"):
            self.query_one("#plan", Static).update(self.plan_text())

    def on_confirm_input_attempt(self, event: ConfirmInput.Attempt) -> None:
        # The engine's rule decides (last 4 of the serial, the whole serial or a by-id name;
        # the kernel name only for a disk without a serial), exactly as for --confirm.
        if self.job is None or self.job.confirm is None:
            return
        if engine.confirm_matches(self.job.confirm, event.text):
            event.confirm.accept()
            self.dismiss(self.job)
        else:
            event.confirm.reject(event.text)

    def action_scroll_plan(self, direction: int) -> None:
        box = self.query_one("#summary", VerticalScroll)
        if direction > 0:
            box.scroll_page_down()
        else:
            box.scroll_page_up()

    def action_start(self) -> None:
        if self.job is None:
            return
        if self.job.confirm is None:
            self.dismiss(self.job)
        else:
            self.query_one(ConfirmInput).focus_input()
