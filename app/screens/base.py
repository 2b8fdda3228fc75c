"""What every screen shares: a title bar, a footer with key hints, a status line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from app.widgets.titlebar import TitleBar

if TYPE_CHECKING:
    from app.app import BootmediaApp
    from app.session import Session

T = TypeVar("T")


class BaseScreen(Screen[T]):
    """A full screen. Escape goes back (dismisses with None)."""

    TITLE_TEXT = ""
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back", key_display="Esc")]

    def __init__(self, title: str = "") -> None:
        super().__init__()
        self.title_text = title or self.TITLE_TEXT

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
        """Run fn in a thread worker; post Loaded(what, value) or LoadFailed(what, reason)."""
        self.bm.load_in_thread(self, what, fn, *args, **kwargs)
