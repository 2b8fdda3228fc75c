"""Typed confirmation: the technician types the last 4 characters of the target's serial."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Static


class ConfirmInput(Vertical):
    """Posts Confirmed only when the typed text matches `code`; anything else does nothing
    but say so. Matching ignores case and surrounding spaces."""

    DEFAULT_CSS = """
    ConfirmInput { height: auto; }
    ConfirmInput > #confirm-prompt { height: auto; }
    ConfirmInput > Input { width: 30; }
    ConfirmInput > #confirm-error { color: $error; height: 1; }
    """

    class Confirmed(Message):
        def __init__(self, confirm: ConfirmInput) -> None:
            super().__init__()
            self.confirm = confirm

    def __init__(self, code: str, prompt: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.code = code
        self.prompt = prompt

    def compose(self) -> ComposeResult:
        yield Static(self.prompt, id="confirm-prompt")
        yield Input(placeholder="_" * len(self.code), id="confirm-input")
        yield Static("", id="confirm-error")

    def matches(self, typed: str) -> bool:
        return typed.strip().lower() == self.code.lower()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.matches(event.value):
            self.query_one("#confirm-error", Static).update("")
            self.post_message(self.Confirmed(self))
        else:
            self.query_one("#confirm-error", Static).update(
                f"'{event.value.strip()}' does not match. Nothing was written."
            )
            event.input.value = ""

    def focus_input(self) -> None:
        self.query_one(Input).focus()
