"""The home menu: every job one key away, with what the machine has at a glance."""

from __future__ import annotations

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

# (key, action, label, what it does)
MENU = (
    ("r", "restore", "Restore", "put an image onto a disk"),
    ("c", "capture", "Capture", "take an image of a disk"),
    ("k", "clone", "Clone", "copy a disk onto another"),
    ("w", "wipe", "Wipe", "erase a disk + report"),
    ("p", "partition", "Partition", "lay out a blank disk"),
    ("v", "verify", "Verify", "check an image is intact"),
    ("m", "make_stick", "Stick", "write the live USB stick"),
    ("i", "images", "Images", "list, inspect, delete"),
    ("d", "disks", "Disks", "what is plugged in"),
    ("l", "log", "Log", "what bootmedia did"),
    ("s", "shell", "Shell", "a root shell"),
    ("b", "power('reboot')", "Reboot", ""),
    ("o", "power('poweroff')", "Power off", ""),
)


class HomeScreen(BaseScreen[None]):
    TITLE_TEXT = "Home"
    QUEUE_KEYS_UNTIL_LOADED = False  # the menu works before the machine pane is filled
    HOLDS_KEYS_DURING_FLOW = True
    BINDINGS: ClassVar[list[BindingType]] = [
        *(Binding(key, f"app.{action}", label, show=False) for key, action, label, _ in MENU),
        Binding("f5", "refresh", "Refresh", key_display="F5"),
        Binding("escape", "back", "Back", show=False),
    ]
    DEFAULT_CSS = """
    HomeScreen #menu { width: 42; height: 1fr; border: solid $primary; }
    HomeScreen #machine { width: 1fr; height: 1fr; text-wrap: nowrap; text-overflow: clip; }
    """

    def compose_body(self) -> ComposeResult:
        options = [
            Option(
                Text.assemble((f" {key} ", "bold reverse"), f" {label:<10}", (desc, "dim")),
                id=action,
            )
            for key, action, label, desc in MENU
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
        text = Text(no_wrap=True, overflow="ellipsis")  # cut at the pane's edge, never wrapped
        rows = engine.list_disks(session)
        text.append(f"Disks ({len(rows)}):\n", "bold")
        for r in rows[:5]:
            text.append(f" {r.disk.name:<12.12}{human_size(r.disk.size):>9} {r.bus}\n")
            text.append(f"  {r.title}\n", "dim" if r.refusal else "")
            if r.refusal:
                text.append(f"  refused: {r.short_refusal}\n", "dim")
            else:
                style = "bold" if r.partitions_text().startswith(("INCOMPLETE", "no part")) else ""
                text.append(f"  {r.partitions_text()}\n", style)
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
