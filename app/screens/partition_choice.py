"""Restore wizard step: which of the image's partitions to restore (issue 10).

Shown only when the target's partition table already matches the image's: every partition
starts ticked; unticking one leaves it on the disk exactly as it is. With everything ticked
the whole disk is restored as before."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Static

from app.messages import Loaded, LoadFailed
from app.screens.base import BaseScreen
from app.widgets.toggles import Toggle

# The answer: None = the whole disk; a tuple = only these partitions.
Answer = dict[str, tuple[int, ...] | None]


class PartitionChoiceScreen(BaseScreen[Answer]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        Binding("enter", "next", "Next", key_display="Enter"),
        Binding("down", "app.focus_next", "Move", show=False),
        Binding("up", "app.focus_previous", "Move", show=False),
    ]

    def __init__(
        self,
        title: str,
        load: Callable[[], list[tuple[int, str]]],
        on_nothing: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(title)
        self.load = load
        self.on_nothing = on_nothing  # told when there is nothing to choose (tables differ)
        self.numbers: list[int] = []

    def compose_body(self) -> ComposeResult:
        yield Static(
            "This disk's partition table matches the image's. Untick the partitions to leave "
            "as they are; the ticked ones are overwritten.",
            classes="heading",
        )
        yield Vertical(classes="pane", id="parts")

    def on_mount(self) -> None:
        self.query_one("#parts").border_title = "Partitions to restore"
        self.status("Comparing the disk's partition table with the image's...")
        self.run_blocking("partitions", self.load)

    def on_loaded(self, message: Loaded) -> None:
        parts: list[tuple[int, str]] = message.value
        if not parts:  # tables differ: the whole disk is restored, nothing to choose
            self.on_nothing()
            self.dismiss({"partitions": None})
            return
        box = self.query_one("#parts", Vertical)
        for n, text in parts:
            box.mount(Toggle(text, True, id=f"p{n}"))
        self.numbers = [n for n, _ in parts]
        self.call_after_refresh(lambda: self.query_one(f"#p{parts[0][0]}", Toggle).focus())
        self.status("Up/Down moves, Space ticks or unticks, Enter goes on.")

    def on_load_failed(self, message: LoadFailed) -> None:
        self.status(message.reason, error=True)

    def action_next(self) -> None:
        if not self.numbers:
            return
        chosen = tuple(n for n in self.numbers if self.query_one(f"#p{n}", Toggle).value)
        if not chosen:
            self.status("Tick at least one partition (Esc goes back).", error=True)
            return
        self.dismiss({"partitions": None if len(chosen) == len(self.numbers) else chosen})
