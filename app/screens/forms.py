"""Wizard steps that ask for options: restore options, capture name and compression."""

from __future__ import annotations

import re
from datetime import date
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Checkbox, Input, RadioButton, RadioSet, Static

from app.screens.base import BaseScreen

NEXT = Binding("ctrl+n", "next", "Next", key_display="^N")


class RestoreOptionsScreen(BaseScreen[dict[str, Any]]):
    """Grow to fill the disk, verify after writing (on), and what to do afterwards."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        NEXT,
        Binding("f10", "next", "Next", show=False),
    ]
    DEFAULT_CSS = """
    RestoreOptionsScreen Checkbox, RestoreOptionsScreen RadioSet { border: none; margin: 0 0 1 0; }
    """

    def __init__(self, title: str, defaults: dict[str, Any] | None = None) -> None:
        super().__init__(title)
        self.defaults = defaults or {}

    def compose_body(self) -> ComposeResult:
        d = self.defaults
        with Vertical(classes="pane", id="options"):
            yield Checkbox(
                "Grow the last partition to fill the disk", d.get("grow", False), id="grow"
            )
            yield Checkbox(
                "Verify after writing (read back and check)", d.get("verify", True), id="verify"
            )
            yield Static("Afterwards:")
            with RadioSet(id="afterwards"):
                after = d.get("afterwards", "stay")
                yield RadioButton("Stay in bootmedia", after == "stay", id="stay")
                yield RadioButton("Reboot", after == "reboot", id="reboot")
                yield RadioButton("Power off", after == "poweroff", id="poweroff")
            yield Static(
                "Tab moves, Space toggles, Ctrl+N (or Enter on the last field) goes on.",
                classes="hint",
            )

    def on_mount(self) -> None:
        self.query_one("#options").border_title = "Options"
        self.query_one("#grow", Checkbox).focus()

    def on_key(self, event: Any) -> None:
        if event.key == "enter" and not isinstance(self.focused, Checkbox | RadioSet):
            event.stop()
            self.action_next()

    def action_next(self) -> None:
        radio = self.query_one("#afterwards", RadioSet).pressed_button
        self.dismiss(
            {
                "grow": self.query_one("#grow", Checkbox).value,
                "verify": self.query_one("#verify", Checkbox).value,
                "afterwards": radio.id if radio is not None and radio.id else "stay",
            }
        )


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class CaptureFormScreen(BaseScreen[dict[str, Any]]):
    """Image name, description and zstd level. Enter on the last field goes on."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        NEXT,
    ]
    DEFAULT_CSS = """
    CaptureFormScreen Input { border: solid $accent; width: 60; }
    """

    def __init__(self, title: str, source_name: str) -> None:
        super().__init__(title)
        self.source_name = source_name

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="pane", id="form"):
            yield Static("Image name (letters, digits, . _ -):")
            yield Input(f"{self.source_name}-{date.today():%Y%m%d}", id="name")
            yield Static("Description (what is on it, for whom):")
            yield Input("", id="description")
            yield Static("Compression level 1-19 (3 is fast and good; 19 is smallest):")
            yield Input("3", id="level")

    def on_mount(self) -> None:
        self.query_one("#form").border_title = "Image"
        self.query_one("#name", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "level":
            self.action_next()
        else:
            self.focus_next()

    def action_next(self) -> None:
        name = self.query_one("#name", Input).value.strip()
        level_text = self.query_one("#level", Input).value.strip()
        if not NAME_RE.match(name):
            self.status("The name must be 1-64 letters, digits, '.', '_' or '-'.", error=True)
            self.query_one("#name", Input).focus()
            return
        if not level_text.isdigit() or not 1 <= int(level_text) <= 19:
            self.status("The compression level is a number from 1 to 19.", error=True)
            self.query_one("#level", Input).focus()
            return
        self.dismiss(
            {
                "name": name,
                "description": self.query_one("#description", Input).value.strip(),
                "level": int(level_text),
            }
        )
