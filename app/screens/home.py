"""The home menu: every job one key away, with what the machine has at a glance."""

from __future__ import annotations

import textwrap
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from app import engine
from app.messages import Loaded, LoadFailed
from app.screens.base import BaseScreen
from bootmedia.progress import human_size

# (key, action, label, what it does); None between groups: jobs, looking around, the machine.
MENU = (
    ("r", "restore", "Restore", "put an image onto a disk"),
    ("c", "capture", "Capture", "take an image of a disk"),
    ("k", "clone", "Clone", "copy a disk onto another"),
    ("w", "wipe", "Wipe", "erase a disk + report"),
    ("p", "partition", "Partition", "lay out a blank disk"),
    ("v", "verify", "Verify", "check an image is intact"),
    ("m", "make_stick", "Stick", "write the live USB stick"),
    None,
    ("i", "images", "Images", "list, inspect, delete"),
    ("d", "disks", "Disks", "what is plugged in"),
    ("l", "log", "Log", "what bootmedia did"),
    None,
    ("s", "shell", "Shell", "a root shell"),
    ("o", "power_menu", "Power off", "or reboot"),
)
ENTRIES = tuple(e for e in MENU if e is not None)
MENU_WIDTH = 42


class HomeScreen(BaseScreen[None]):
    TITLE_TEXT = "Home"
    QUEUE_KEYS_UNTIL_LOADED = False  # the menu works before the machine pane is filled
    HOLDS_KEYS_DURING_FLOW = True
    BINDINGS: ClassVar[list[BindingType]] = [
        *(Binding(key, f"app.{action}", label, show=False) for key, action, label, _ in ENTRIES),
        Binding("b", "app.power('reboot')", "Reboot", show=False),  # the old key, still there
        Binding("f5", "refresh", "Refresh", key_display="F5"),
        Binding("escape", "back", "Back", show=False),
    ]
    DEFAULT_CSS = (
        """
    HomeScreen #menu { width: MENU_WIDTH; height: 1fr; border: solid $primary; }
    HomeScreen #machine { width: 1fr; height: 1fr; text-wrap: nowrap; text-overflow: clip; }
    """
    ).replace("MENU_WIDTH", str(MENU_WIDTH))

    def compose_body(self) -> ComposeResult:
        options = [
            None
            if entry is None
            else Option(
                Text.assemble(
                    (f" {entry[0]} ", "bold reverse"), f" {entry[2]:<10}", (entry[3], "dim")
                ),
                id=entry[1],
            )
            for entry in MENU
        ]
        with Horizontal():
            yield OptionList(*options, id="menu")
            yield Static("Looking for disks and images...", id="machine", classes="pane")

    def on_mount(self) -> None:
        self.query_one("#menu", OptionList).border_title = "What do you want to do?"
        self.query_one("#machine", Static).border_title = "This machine"
        self.action_refresh()

    def on_screen_resume(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        self.run_blocking("machine", self.load_machine)

    def load_machine(self) -> Text:
        session = self.session
        text = Text(no_wrap=True, overflow="crop")
        # The pane's inner width: long contents and refusals wrap between words, indented
        # under their disk, instead of running off the edge mid-word.
        width = max(20, self.app.size.width - MENU_WIDTH - 4)

        def para(line: str, style: str = "") -> None:
            for part in textwrap.wrap(line, width - 2, break_on_hyphens=False) or [""]:
                text.append(f"  {part}\n", style)

        rows = engine.list_disks(session)
        text.append(f"Disks ({len(rows)}):\n", "bold")
        for r in rows[:5]:
            text.append(f" {r.disk.name:<12.12}{human_size(r.disk.size):>9} {r.bus}\n")
            para(r.title, "dim" if r.refusal else "")
            if r.refusal:
                para(f"refused: {r.short_refusal}", "dim")
            else:
                style = "bold" if r.partitions_text().startswith(("INCOMPLETE", "no part")) else ""
                para(r.partitions_text(), style)
        repos = engine.find_repositories(session)
        images = engine.list_images(repos)
        text.append(f"\nImages ({len(images)}):\n", "bold")
        for img in images[:6]:
            text.append(f" {img.name[:18]:<18} {str(img.manifest.created)[:10]}\n")
        if not repos:
            text.append(" no repository found\n", "dim")
        return text

    def on_loaded(self, message: Loaded) -> None:
        self.query_one("#machine", Static).update(message.value)

    def on_load_failed(self, message: LoadFailed) -> None:
        self.query_one("#machine", Static).update(Text(message.reason, "bold red"))

    async def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        await self.run_action(f"app.{event.option.id}")

    def action_back(self) -> None:
        pass  # home is the bottom of the stack
