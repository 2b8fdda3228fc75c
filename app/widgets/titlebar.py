"""The top line: where the technician is, and a loud marker in demo mode."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class TitleBar(Static):
    DEFAULT_CSS = """
    TitleBar { dock: top; height: 1; background: $primary; color: $text; text-style: bold; }
    """

    def __init__(self, title: str, *, demo: bool = False) -> None:
        text = Text(f" bootmedia | {title}")
        if demo:
            text.append("   DEMO LAB: virtual disks only", "reverse")
        super().__init__(text)
