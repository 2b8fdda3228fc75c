"""What every screen shares: a title bar, a footer with key hints, a status line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from app.messages import Loaded, LoadFailed
from app.widgets.titlebar import TitleBar

if TYPE_CHECKING:
    from app.app import BootmediaApp
    from app.session import Session

T = TypeVar("T")


# Keys that act at once even while a screen loads: going back and quitting.
UNQUEUED_KEYS = frozenset({"escape", "ctrl+q"})


class BaseScreen(Screen[T]):
    """A full screen. Escape goes back (dismisses with None).

    A screen that loads what it shows (a disk list, a plan) calls start_loading() before and
    done_loading() once it is drawn: keys typed meanwhile (a technician who knows the way types
    ahead) are queued and replayed in order, never dropped."""

    TITLE_TEXT = ""
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back", key_display="Esc")]
    QUEUE_KEYS_UNTIL_LOADED = True  # Home is usable before its side pane is filled: False
    # The screen under a running wizard (Home) is on top only for the moment between one step
    # and the next: keys typed then belong to the next step, so it holds them for it.
    HOLDS_KEYS_DURING_FLOW = False

    def __init__(self, title: str = "") -> None:
        super().__init__()
        self.title_text = title or self.TITLE_TEXT
        self.loading_data = False
        self.loaded_once = False
        self.queued_keys: list[tuple[str, str | None]] = []

    def start_loading(self) -> None:
        self.loading_data = True

    def done_loading(self) -> None:
        """Replay the keys typed while loading, after the loaded widgets have focus."""
        if not self.loading_data:
            return
        self.loading_data = False
        keys, self.queued_keys = self.queued_keys, []
        self.bm.replay_keys(keys)

    def holding_keys(self) -> bool:
        return self.loading_data or (self.HOLDS_KEYS_DURING_FLOW and self.bm.flow_active())

    def on_key(self, event: events.Key) -> None:
        if event.key in UNQUEUED_KEYS:
            return
        if self.holding_keys():
            event.stop()
            event.prevent_default()
            self.queued_keys.append((event.key, event.character))
        elif self.bm.key_backlog and not getattr(event, "replayed", False):
            # Keys typed earlier are still being replayed: this one goes after them.
            event.stop()
            event.prevent_default()
            self.bm.replay_keys([(event.key, event.character)])

    def on_screen_suspend(self) -> None:
        # The next step is on top now: what was typed for it goes to it.
        if self.HOLDS_KEYS_DURING_FLOW and self.queued_keys:
            keys, self.queued_keys = self.queued_keys, []
            self.bm.replay_keys(keys)

    def release_keys(self) -> None:
        """The wizard ended: keys it did not take are the home screen's again."""
        if not self.loading_data:
            keys, self.queued_keys = self.queued_keys, []
            self.bm.replay_keys(keys)

    @property
    def bm(self) -> BootmediaApp:
        return cast("BootmediaApp", self.app)

    @property
    def session(self) -> Session:
        return self.bm.session

    def compose(self) -> ComposeResult:
        yield TitleBar(self.title_text, demo=self.session.demo)
        yield from self.compose_body()
        yield Static("", id="status")
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def status(self, text: str, *, error: bool = False) -> None:
        status = self.query_one("#status", Static)
        status.set_class(error, "error")
        status.update(text)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # Worker state messages do not bubble: each screen hands its failures to the app.
        if event.state == WorkerState.ERROR:
            self.worker_crashed(event.worker)

    def worker_crashed(self, worker: Worker[Any]) -> None:
        self.bm.worker_failed(worker)

    def action_back(self) -> None:
        self.dismiss(None)

    def finish(self, result: T | None) -> None:
        """Dismiss this screen with result even when a dialog is open over it: dismiss() pops
        the top screen, so the dialogs above are answered "no" and closed first."""
        if self not in self.app.screen_stack:
            return
        while self.app.screen is not self:
            self.app.screen.dismiss(None)
        self.dismiss(result)

    def run_blocking(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        """Run fn in a thread worker; post Loaded(what, value) or LoadFailed(what, reason).
        Until the screen's first load has arrived (and been drawn), keys are queued."""
        if not self.loaded_once and self.QUEUE_KEYS_UNTIL_LOADED:
            self.start_loading()
        self.bm.load_in_thread(self, what, fn, *args, **kwargs)

    # Textual calls these after the subclass's own on_loaded/on_load_failed (MRO dispatch).
    @on(Loaded)
    @on(LoadFailed)
    def _first_load_arrived(self, message: Loaded | LoadFailed) -> None:
        self.loaded_once = True
        self.call_after_refresh(self.done_loading)
