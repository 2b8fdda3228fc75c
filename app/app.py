"""The bootmedia Textual app: home menu, job flows, and the one place worker failures land."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.dom import DOMNode
from textual.worker import Worker, WorkerState

from app.glyphs import make_console_safe
from app.messages import Loaded, LoadFailed
from app.session import Session
from bootmedia.errors import BootmediaError

log = logging.getLogger("bootmedia.tui")

CSS = """
Screen { background: $background; }
#status { height: 1; color: $text-muted; padding: 0 1; }
#status.error { color: $error; text-style: bold; }
.hint { color: $text-muted; }
.heading { text-style: bold; margin: 1 0 0 0; }
.pane { border: solid $primary; padding: 0 1; }
.danger { color: $error; text-style: bold; }
.ok { color: $success; text-style: bold; }
DataTable { height: 1fr; }
/* The selected row: reverse video as well as colour (and a mark, see widgets/tables.py), so it
   shows in monochrome, over a serial line and in a screen capture. */
DataTable > .datatable--cursor, DataTable:focus > .datatable--cursor { text-style: reverse bold; }
Toast { border-left: solid $accent; }
/* Textual draws focus with "tall" borders (eighth blocks); the console font has plain lines. */
Input, Input:focus { border: solid $primary; }
Input:focus { border: solid $accent; }
OptionList, OptionList:focus { border: solid $primary; }
RichLog, RichLog:focus { border: solid $primary; }
"""


class BootmediaApp(App[None]):
    """Screens decide, widgets show, workers run the engine and post messages."""

    CSS = CSS
    TITLE = "bootmedia"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [Binding("ctrl+q", "quit", "Quit", show=False)]

    def __init__(self, session: Session) -> None:
        make_console_safe()
        super().__init__()
        self.session = session

    def on_mount(self) -> None:
        from app.screens.home import HomeScreen

        self.push_screen(HomeScreen())
        if self.session.check_unattended:
            self.look_for_unattended_job()

    @work(thread=True, exit_on_error=False, group="unattended")
    def look_for_unattended_job(self) -> None:
        from app.flows.unattended import find_unattended

        try:
            resolved = find_unattended()
        except BootmediaError as exc:
            self.post_message(LoadFailed("unattended", str(exc)))
            return
        if resolved is not None:
            self.post_message(Loaded("unattended", resolved))

    def on_loaded(self, message: Loaded) -> None:
        if message.what != "unattended":
            return
        from app.flows.unattended import unattended_flow

        async def flow(app: BootmediaApp) -> None:
            await unattended_flow(app, message.value)

        self.start_flow(flow)

    def on_load_failed(self, message: LoadFailed) -> None:
        if message.what == "unattended":
            # The job as written cannot run here: say why, loudly, and leave the menu usable.
            log.error("unattended job: %s", message.reason)
            self.show_error(message.reason, "The unattended job cannot run.")

    # ------------------------------------------------------------ workers

    def load_in_thread(
        self, node: DOMNode, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        """Run fn(*args) in a thread; the answer comes back to node as Loaded or LoadFailed."""

        def body() -> None:
            try:
                value = fn(*args, **kwargs)
            except BootmediaError as exc:
                node.post_message(LoadFailed(what, str(exc)))
            else:
                node.post_message(Loaded(what, value))

        node.run_worker(body, thread=True, exit_on_error=False, group=what, name=what)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.worker_failed(event.worker)

    def worker_failed(self, worker: Worker[Any], *, show: bool = True) -> str:
        """The one place a crashed worker lands (screens forward theirs here): the traceback
        goes to the log, the technician gets an error screen with the reason, never a
        traceback on the console. Returns the reason."""
        error = worker.error
        log.error("worker %s crashed", worker.name, exc_info=error)
        reason = f"{type(error).__name__}: {error}" if error else "unknown error"
        if show:
            self.show_error(reason)
        return reason

    def show_error(self, reason: str, headline: str = "") -> None:
        from app.screens.result import ErrorScreen

        log_path = str(self.session.log_path)
        self.push_screen(ErrorScreen(reason, log_path, *([headline] if headline else [])))

    def start_flow(self, flow: Callable[[BootmediaApp], Coroutine[Any, Any, None]]) -> None:
        """Run a wizard: an async function that pushes its screens one after another."""
        self.run_worker(flow(self), group="flow", exclusive=True, exit_on_error=False)

    # ------------------------------------------------------------ home menu actions

    def action_restore(self) -> None:
        from app.flows.restore import restore_flow

        self.start_flow(restore_flow)

    def action_capture(self) -> None:
        from app.flows.capture import capture_flow

        self.start_flow(capture_flow)

    def action_clone(self) -> None:
        from app.flows.clone import clone_flow

        self.start_flow(clone_flow)

    def action_wipe(self) -> None:
        from app.flows.wipe import wipe_flow

        self.start_flow(wipe_flow)

    def action_partition(self) -> None:
        from app.flows.partition import partition_flow

        self.start_flow(partition_flow)

    def action_verify(self) -> None:
        from app.flows.verify import verify_flow

        self.start_flow(verify_flow)

    def action_make_stick(self) -> None:
        from app.flows.stick import stick_flow

        self.start_flow(stick_flow)

    def action_images(self) -> None:
        from app.screens.images import ImagesScreen

        self.push_screen(ImagesScreen())

    def action_disks(self) -> None:
        from app.screens.disks import DisksScreen

        self.push_screen(DisksScreen())

    def action_log(self) -> None:
        from app.screens.log import LogScreen

        self.push_screen(LogScreen())

    def action_shell(self) -> None:
        shell = os.environ.get("SHELL") or "/bin/bash"
        with self.suspend():
            print("bootmedia: type 'exit' to return to the menu.\n", flush=True)
            subprocess.run([shell], check=False)

    def action_power(self, what: str) -> None:
        self._power(what)

    @work(group="power", exclusive=True, exit_on_error=False)
    async def _power(self, what: str) -> None:
        from app.screens.dialogs import YesNo

        verb = "Reboot" if what == "reboot" else "Power off"
        if not await self.push_screen_wait(YesNo(f"{verb} this machine now?")):
            return
        self.power(what)

    def power(self, what: str) -> None:
        """Reboot or power off; in the demo lab, only say what would happen."""
        if self.session.demo:
            self.notify(f"Demo lab: the machine would {what.replace('poweroff', 'power off')} now.")
            return
        log.info("%s requested from the menu", what)
        subprocess.run(["systemctl", what], check=False)
