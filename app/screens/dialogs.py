"""Small modal questions."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class YesNo(ModalScreen[bool]):
    """y/Enter = yes, n/Esc = no."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", key_display="y"),
        Binding("enter", "answer(True)", "Yes", show=False),
        Binding("n", "answer(False)", "No", key_display="n"),
        Binding("escape", "answer(False)", "No", show=False),
    ]
    DEFAULT_CSS = """
    YesNo { align: center middle; }
    YesNo > Vertical { width: 60; height: auto; border: double $warning; background: $panel; padding: 1 2; }
    """

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__()
        self.question = question
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"[b]{self.question}[/b]")
            if self.detail:
                yield Static(self.detail)
            yield Static("\n[b]y[/b] yes    [b]n[/b] no", classes="hint")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class PowerChoice(ModalScreen[str | None]):
    """Home's one power entry: r reboots, o powers off, Esc/n does nothing. The key pressed
    is the confirmation (a second dialog would only train pressing y)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "answer('reboot')", "Reboot"),
        Binding("o", "answer('poweroff')", "Power off"),
        Binding("escape", "answer(None)", "Cancel", key_display="Esc"),
        Binding("n", "answer(None)", "Cancel", show=False),
    ]
    DEFAULT_CSS = YesNo.DEFAULT_CSS.replace("YesNo", "PowerChoice")

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("[b]Reboot or power off this machine now?[/b]")
            yield Static(
                "\n[b]r[/b] reboot    [b]o[/b] power off    [b]Esc[/b] neither", classes="hint"
            )

    def action_answer(self, what: str | None) -> None:
        self.dismiss(what)


class AskText(ModalScreen[str | None]):
    """One line of text (a path, a name); Esc gives None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", key_display="Esc")
    ]
    DEFAULT_CSS = """
    AskText { align: center middle; }
    AskText > Vertical { width: 70; height: auto; border: solid $accent; background: $panel; padding: 1 2; }
    AskText Input { border: solid $accent; }
    """

    def __init__(self, question: str, value: str = "", *, note: str = "") -> None:
        super().__init__()
        self.question = question
        self.value = value
        self.note = note  # e.g. the equivalent command line

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self.question))
            yield Input(value=self.value)
            if self.note:
                yield Static(Text(self.note), classes="hint", id="note")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
