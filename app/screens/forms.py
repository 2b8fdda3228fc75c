"""Wizard steps that ask for options: restore options, capture name and compression."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input, Static

from app import engine
from app.messages import Loaded, LoadFailed
from app.screens.base import BaseScreen
from app.widgets.toggles import Choice, Toggle
from bootmedia.capture.plan import suggest_name
from bootmedia.disks.model import Disk
from bootmedia.errors import BootmediaError
from bootmedia.repo.manifest import check_image_name


class RestoreOptionsScreen(BaseScreen[dict[str, Any]]):
    """Grow to fill the disk, verify after writing (on), and what to do afterwards."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        Binding("enter", "next", "Next", key_display="Enter"),
        Binding("down", "app.focus_next", "Move", show=False),
        Binding("up", "app.focus_previous", "Move", show=False),
    ]
    DEFAULT_CSS = """
    RestoreOptionsScreen Toggle, RestoreOptionsScreen Choice { margin: 1 0 0 0; }
    """

    def __init__(self, title: str, defaults: dict[str, Any] | None = None) -> None:
        super().__init__(title)
        self.defaults = defaults or {}

    def compose_body(self) -> ComposeResult:
        d = self.defaults
        with Vertical(classes="pane", id="options"):
            yield Toggle(
                "Grow the last partition to fill the disk", d.get("grow", False), id="grow"
            )
            yield Toggle(
                "Verify after writing (read back and check)", d.get("verify", True), id="verify"
            )
            yield Toggle(
                "Check the image before writing (a damaged image never touches the disk)",
                d.get("check_first", True),
                id="check_first",
            )
            yield Toggle(
                "Then customize this machine (name, machine-id, UEFI entry)",
                d.get("customize", False),
                id="customize",
            )
            yield Static("\nAfterwards:")
            yield Choice(AFTERWARDS, d.get("afterwards", "stay"), id="afterwards")
            yield Static(
                "\nUp/Down moves, Space changes, Enter goes on.",
                classes="hint",
            )

    def on_mount(self) -> None:
        self.query_one("#options").border_title = "Options"
        self.query_one("#grow", Toggle).focus()

    def action_next(self) -> None:
        self.dismiss(
            {
                "grow": self.query_one("#grow", Toggle).value,
                "verify": self.query_one("#verify", Toggle).value,
                "check_first": self.query_one("#check_first", Toggle).value,
                "afterwards": self.query_one("#afterwards", Choice).value,
                "customize": self.query_one("#customize", Toggle).value,
            }
        )


AFTERWARDS = [("stay", "Stay in bootmedia"), ("reboot", "Reboot"), ("poweroff", "Power off")]


class CaptureFormScreen(BaseScreen[dict[str, Any]]):
    """Image name, description and zstd level. Enter on the last field goes on."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        Binding("ctrl+n", "next", "Next", key_display="^N"),
    ]
    DEFAULT_CSS = """
    CaptureFormScreen Input { width: 60; }
    """

    def __init__(self, title: str, source: Disk, repo: Path | None = None) -> None:
        super().__init__(title)
        self.source = source
        self.suggested = suggest_name(source, date.today())
        self.repo = repo
        self.taken: set[str] = set()  # names already in the repository (loaded in a thread)

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="pane", id="form"):
            yield Static("Image name (letters, digits, . _ + -):")
            yield Input(self.suggested, id="name")
            yield Static("Description (what is on it, for whom):")
            yield Input("", id="description")
            # The engine's default, so the command line shown has no --level unless changed.
            from bootmedia.capture.plan import DEFAULT_LEVEL

            yield Static(
                f"Compression level 1-19 ({DEFAULT_LEVEL} is fast and good; 19 is smallest):"
            )
            yield Input(str(DEFAULT_LEVEL), id="level")

    def on_mount(self) -> None:
        self.query_one("#form").border_title = "Image"
        self.query_one("#name", Input).focus()
        if self.repo is not None:
            self.run_blocking("names", engine.image_names, self.repo)

    def on_loaded(self, message: Loaded) -> None:
        if message.what == "names":
            self.taken = set(message.value)
            field = self.query_one("#name", Input)
            if field.value == self.suggested and self.suggested in self.taken:
                # Captured already today: the next free one (-2, -3 ...), not a refusal later.
                self.suggested = field.value = suggest_name(self.source, date.today(), self.taken)

    def on_load_failed(self, message: LoadFailed) -> None:
        pass  # a repository that cannot be listed yet: the plan says why, one step on

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "level":
            self.action_next()
        else:
            self.focus_next()

    def action_next(self) -> None:
        name = self.query_one("#name", Input).value.strip()
        level_text = self.query_one("#level", Input).value.strip()
        try:
            check_image_name(name)  # the repository's own rule
        except BootmediaError as exc:
            self.status(str(exc), error=True)
            self.query_one("#name", Input).focus()
            return
        if name in self.taken:
            self.status(f"{name} is already in this repository: choose another name.", error=True)
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
