"""The progress screen every job shares. The job runs in a thread worker; its Reporter posts
JobProgress messages; Cancel asks first, then sets the Reporter's cancel Event and waits for the
job to stop in its defined state."""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Static
from textual.worker import Worker

from app.jobs import Job, Outcome
from app.messages import JobProgress, Loaded
from app.screens.base import BaseScreen
from app.screens.dialogs import YesNo
from app.widgets.progress_view import ProgressView
from app.wrap import wrap_command
from bootmedia.progress import Progress, Reporter

log = logging.getLogger("bootmedia.tui")


class ProgressScreen(BaseScreen[Outcome]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel job", key_display="Esc"),
        # Quitting under a running job would abandon it: Ctrl+Q asks to cancel instead.
        Binding("ctrl+q", "cancel", "Cancel job", show=False),
    ]

    def __init__(self, job: Job) -> None:
        super().__init__(job.title)
        self.job = job
        self.cancel = threading.Event()
        self.outcome: Outcome | None = None  # set once the job has ended, whatever is open
        self.asked = False  # the technician opened "Cancel?" while the job ran

    DEFAULT_CSS = """
    ProgressScreen #command { height: auto; padding: 0 1; color: $text-muted; }
    """

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="pane", id="job"):
            yield ProgressView(id="progress", note=self.job.work_note)
        if self.job.command:
            lines = wrap_command(self.job.command, self.app.size.width - 2)
            yield Static(Text("\n".join(lines), no_wrap=True, overflow="fold"), id="command")

    def on_mount(self) -> None:
        self.query_one("#job").border_title = self.job.title
        self.status("Running. Esc cancels (you will be asked first).")
        self.run_job()

    @work(thread=True, exit_on_error=False, group="job")
    def run_job(self) -> None:
        # Reporter callbacks arrive on the job's threads; post_message is thread-safe.
        reporter = Reporter(callback=self.report, cancel=self.cancel)
        log.info("job start: %s (%s)", self.job.title, self.job.command or "no CLI equivalent")
        lab = self.session.lab
        refusal = None
        if lab is not None and self.job.confirm is not None:
            # The lab checks again right before the write: the loop number may serve
            # another file by now.
            refusal = lab.write_refusal(self.job.confirm.disk.path)
        if refusal:
            outcome = Outcome(False, f"{self.job.kind.capitalize()} refused", (refusal,))
        else:
            outcome = self.job.run(reporter)
        log.info("job end: %s: %s", self.job.title, outcome.title)
        self.post_message(Loaded("outcome", outcome))

    def report(self, progress: Progress) -> None:
        self.post_message(JobProgress(progress))

    def worker_crashed(self, worker: Worker[Any]) -> None:
        if worker.group != "job":
            super().worker_crashed(worker)
            return
        # The job itself crashed: the flow shows the error screen in place of the result.
        reason = self.bm.worker_failed(worker, show=False)
        self.finish(Outcome(False, f"{self.job.kind.capitalize()} failed", (), error=reason))

    def on_unmount(self) -> None:
        # The app is going away under a running job (Ctrl+Q): stop the job in its defined state
        # rather than leave a thread writing to a disk nobody watches.
        self.cancel.set()

    def on_job_progress(self, message: JobProgress) -> None:
        self.query_one(ProgressView).progress = message.progress

    def on_loaded(self, message: Loaded) -> None:
        if message.what != "outcome" or self.outcome is not None:
            return
        outcome: Outcome = message.value
        if (self.asked or self.cancel.is_set()) and not outcome.cancelled:
            # The job ended while "Cancel?" was open (or before the cancel reached it): the
            # dialog closes, and the result says the job ran to its end.
            note = "The job finished before it could be cancelled."
            outcome = dataclasses.replace(outcome, lines=(note, *outcome.lines))
        self.outcome = outcome
        self.finish(outcome)

    @work(group="ask-cancel", exclusive=True, exit_on_error=False)
    async def action_cancel(self) -> None:
        if self.cancel.is_set() or self.outcome is not None or not self.is_current:
            return
        self.asked = True
        answer = await self.app.push_screen_wait(
            YesNo(f"Cancel: {self.job.title}?", f"If you cancel now: {self.job.cancel_note}")
        )
        self.asked = False
        if answer and self.outcome is None:
            self.cancel.set()
            self.status("Cancelling: waiting for the job to stop in a safe state...")
            self.query_one("#job").border_title = f"Cancelling: {self.job.title}"

    def action_back(self) -> None:
        self.action_cancel()
