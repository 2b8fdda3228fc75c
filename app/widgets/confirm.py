"""Typed confirmation: the technician types the last 4 characters of the target's serial."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Static


class ConfirmInput(Vertical):
    """Posts Attempt(text) on Enter; the screen decides whether it names the disk and calls
    accept() or reject(). `code` only sizes the placeholder."""

    DEFAULT_CSS = """
    ConfirmInput { height: auto; }
    ConfirmInput > #confirm-prompt { height: auto; }
    ConfirmInput > Input { width: 30; }
    ConfirmInput > #confirm-error { color: $error; height: 1; }
    """

    class Attempt(Message):
        def __init__(self, confirm: ConfirmInput, text: str) -> None:
            super().__init__()
            self.confirm = confirm
            self.text = text

    def __init__(self, code: str, prompt: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.code = code
        self.prompt = prompt

    def compose(self) -> ComposeResult:
        yield Static(self.prompt, id="confirm-prompt")
        field = Input(placeholder="_" * len(self.code), id="confirm-input")
        # A steady cursor: a blinking one redraws the field twice a second, which is traffic on
        # a slow serial line and made the summary's snapshot depend on when it was taken.
        field.cursor_blink = False
        yield field
        yield Static("", id="confirm-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Attempt(self, event.value))

    def reject(self, text: str) -> None:
        self.query_one("#confirm-error", Static).update(
            f"'{text.strip()}' does not match. Nothing was written."
        )
        self.query_one(Input).value = ""

    def accept(self) -> None:
        self.query_one("#confirm-error", Static).update("")

    def focus_input(self) -> None:
        self.query_one(Input).focus()
