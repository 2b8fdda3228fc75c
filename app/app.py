"""The bootmedia Textual app: home menu, job flows, and the one place worker failures land."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

from textual import events, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.dom import DOMNode
from textual.timer import Timer
from textual.worker import Worker, WorkerState

from app.glyphs import ascii_driver, ascii_terminal, make_console_safe
from app.messages import Loaded, LoadFailed
from app.session import Session
from bootmedia.errors import BootmediaError

log = logging.getLogger("bootmedia.tui")

CSS = """
Screen { background: $background; }
/* A refusal or an error says all of itself: up to 3 lines, wrapped between words. */
#status { height: auto; max-height: 3; color: $text-muted; padding: 0 1; }
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
/* The share and multicast forms' fields are one line each, without a box: the rule above would
   draw only a box's top edge there and hide what is typed. */
NetworkShareScreen Input, NetworkShareScreen Input:focus,
JoinCastScreen Input, JoinCastScreen Input:focus { border: none; }
OptionList, OptionList:focus { border: solid $primary; }
/* The highlighted choice (Home, wipe methods, layouts, repositories) in reverse video too: a
   serial terminal without colour showed no highlight at all. */
OptionList > .option-list--option-highlighted,
OptionList:focus > .option-list--option-highlighted { text-style: reverse bold; }
RichLog, RichLog:focus { border: solid $primary; }
"""


class BootmediaApp(App[None]):
    """Screens decide, widgets show, workers run the engine and post messages."""

    CSS = CSS
    TITLE = "bootmedia"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "ask_quit", "Quit", key_display="^Q", priority=True)
    ]

    def __init__(self, session: Session) -> None:
        make_console_safe()
        super().__init__()
        self.session = session
        self.key_backlog: collections.deque[tuple[str, str | None]] = collections.deque()
        self.replay_timer: Timer | None = None

    def get_driver_class(self) -> Any:
        # A vt100 draws ASCII only (see app/glyphs.py); headless test drivers are left alone.
        driver = super().get_driver_class()
        return ascii_driver(driver) if ascii_terminal() else driver

    def on_mount(self) -> None:
        from app.screens.home import HomeScreen

        # SIGTERM (systemd stopping the console, a kill from another terminal): leave the way
        # Ctrl+Q does, so Textual gives the terminal back (echo, cursor, main screen) and the
        # lab is detached. The default action kills the process with the terminal still raw.
        # SIGHUP (the serial line or the terminal went away) likewise.
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.on_sigterm)
        loop.add_signal_handler(signal.SIGHUP, self.on_sigterm)
        self.push_screen(HomeScreen())
        if self.session.check_unattended:
            self.look_for_unattended_job()

    def on_sigterm(self) -> None:
        log.warning("SIGTERM/SIGHUP: leaving (a running job is cancelled to its defined state)")
        self.exit(return_code=143)

    @work(group="quit", exclusive=True, exit_on_error=False)
    async def action_ask_quit(self) -> None:
        """Ctrl+Q, shown in every footer. Asks first while a demo lab is set up (quitting
        detaches its disks); a running job's screen turns Ctrl+Q into its cancel question."""
        from app.screens.dialogs import YesNo
        from app.screens.progress import ProgressScreen

        if isinstance(self.screen, ProgressScreen):
            self.screen.action_cancel()
            return
        if isinstance(self.screen, YesNo):
            return
        if self.session.lab is not None:
            question = "Quit bootmedia? The demo lab's virtual disks are detached."
        else:
            question = "Quit bootmedia?"
        if await self.push_screen_wait(YesNo(question)):
            self.exit()

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
        """Run a wizard: an async function that pushes its screens one after another. Keys
        typed while its next screen is on the way are held for that screen (screens/base.py)."""

        async def body() -> None:
            try:
                await flow(self)
            finally:
                self.call_later(self._flow_ended)

        self.run_worker(body(), group="flow", exclusive=True, exit_on_error=False, name="flow")

    REPLAY_GAP = 0.1  # seconds between replayed keys: each may dismiss a screen or start a step

    def replay_keys(self, keys: list[tuple[str, str | None]]) -> None:
        """Type held keys again, one at a time, each to whatever screen is current by then (a
        key that chooses something dismisses the screen; the next belongs to the next step)."""
        self.key_backlog.extend(keys)
        if self.key_backlog and self.replay_timer is None:
            self.replay_timer = self.set_interval(self.REPLAY_GAP, self._replay_one)

    def _replay_one(self) -> None:
        if not self.key_backlog:
            if self.replay_timer is not None:
                self.replay_timer.stop()
            self.replay_timer = None
            return
        key, char = self.key_backlog.popleft()
        event = events.Key(key, char)
        event.set_sender(self)  # as the driver's keys are: bindings then apply to it
        event.replayed = True  # type: ignore[attr-defined]
        self.post_message(event)

    def flow_active(self) -> bool:
        return any(
            w.group == "flow" and w.state in (WorkerState.PENDING, WorkerState.RUNNING)
            for w in self.workers
        )

    def _flow_ended(self) -> None:
        from app.screens.base import BaseScreen

        if isinstance(self.screen, BaseScreen) and not self.flow_active():
            self.screen.release_keys()

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
    async def action_power_menu(self) -> None:
        from app.screens.dialogs import PowerChoice

        what = await self.push_screen_wait(PowerChoice())
        if what:
            self.power(what)

    @work(group="power", exclusive=True, exit_on_error=False)
    async def _power(self, what: str) -> None:
        from app.screens.dialogs import YesNo

        verb = "Reboot" if what == "reboot" else "Power off"
        if not await self.push_screen_wait(YesNo(f"{verb} this machine now?")):
            return
        self.power(what)

    def notify(
        self, message: str, *args: Any, severity: str = "information", **kwargs: Any
    ) -> None:
        """Said on the current screen's status line, not in a toast: toasts drew over the panes'
        borders and the footer, wrapped in a column a third of the screen wide."""
        from app.screens.base import BaseScreen

        screen = self.screen
        if isinstance(screen, BaseScreen) and screen.query("#status"):
            screen.status(str(message), error=severity == "error")
            return
        super().notify(message, *args, severity=severity, **kwargs)  # type: ignore[arg-type]

    def power(self, what: str) -> None:
        """Reboot or power off; in the demo lab, only say what would happen."""
        if self.session.demo:
            self.notify(f"Demo lab: the machine would {what.replace('poweroff', 'power off')} now.")
            return
        log.info("%s requested from the menu", what)
        subprocess.run(["systemctl", what], check=False)
