"""Glyphs the Linux console can draw.

The VT's console font (Lat2-Terminus16 and friends, derived from code page 437) has plain and
double box-drawing lines, the full/half/shade blocks and a few arrows, and nothing else beyond
Latin. Textual's defaults use eighth blocks for scrollbars, rounded corners and a few symbols, which
show up as diamonds. `make_console_safe()` swaps those for glyphs the font has; our own widgets
draw only from SAFE.
"""

from __future__ import annotations

import functools
import os
import re
import string
import unicodedata
from collections.abc import Mapping
from typing import Any

# Code page 437's graphic characters that Terminus has, plus printable ASCII.
BOX = "─│┌┐└┘├┤┬┴┼═║╔╗╚╝╠╣╦╩╬╒╓╕╖╘╙╛╜╞╟╡╢╤╥╧╨╪╫"
# Half blocks are in code page 437 but not in every console font (the e2e screenshot of tty1
# showed them as diamonds), so only the full block and the shades are used.
BLOCKS = "█░▒▓"
SYMBOLS = "←↑→↓·•°±×÷«»¦"
SAFE = frozenset(string.printable.replace("\t", "").replace("\r", "") + BOX + BLOCKS + SYMBOLS)

BAR_FULL = "█"
BAR_EMPTY = "░"
SPARK_ROWS = 4  # the sparkline is drawn in whole cells of BAR_FULL, four rows tall


def unsafe_glyphs(text: str) -> set[str]:
    """Characters in text that the console font cannot draw."""
    return {ch for ch in text if ch not in SAFE and ch != "\n"}


def make_console_safe() -> None:
    """Patch Textual's built-in glyphs for the console font. Idempotent."""
    from textual.scrollbar import ScrollBarRender
    from textual.widgets import RadioButton

    # Scrollbar ends are drawn in eighths for smoothness; whole cells are fine here.
    ScrollBarRender.VERTICAL_BARS = [" "] * 8
    ScrollBarRender.HORIZONTAL_BARS = [" "] * 8
    RadioButton.BUTTON_INNER = "*"
    _cut_with_dots()
    _select_arrows()


def _select_arrows() -> None:
    """A Select (the share form's protocol) points with U+25BC/U+25B2; the font has arrows."""
    from textual.widgets._select import SelectCurrent

    if getattr(SelectCurrent.compose, "bootmedia", False):
        return
    original = SelectCurrent.compose

    def compose(self: SelectCurrent) -> Any:
        for widget in original(self):
            for cls, arrow in (("down-arrow", "↓"), ("up-arrow", "↑")):
                if widget.has_class(cls):
                    widget.update(arrow)  # type: ignore[attr-defined]
            yield widget

    compose.bootmedia = True  # type: ignore[attr-defined]
    SelectCurrent.compose = compose  # type: ignore[method-assign]


def _cut_with_dots() -> None:
    """Textual cuts border titles (and a few labels) with U+2026, which the console font has
    not: a title too long for its pane ended in a diamond. Cut with "..." instead."""
    from textual.content import Content

    if getattr(Content.truncate, "bootmedia", False):
        return
    original = Content.truncate

    def truncate(
        self: Content, max_width: int, *, ellipsis: bool = False, pad: bool = False
    ) -> Any:
        if ellipsis and max_width > 3 and self.cell_length > max_width:
            return original(self, max_width - 3) + "..."
        return original(self, max_width, ellipsis=ellipsis, pad=pad)

    truncate.bootmedia = True  # type: ignore[attr-defined]
    Content.truncate = truncate  # type: ignore[method-assign]


# ---- terminals that draw ASCII only ------------------------------------------------------

# A vt100 (or a terminal emulator set to be one on a serial line) draws 7-bit ASCII: box lines,
# blocks and symbols in UTF-8 come out as two or three garbage characters each and break the
# layout. Each of our glyphs has a one-cell ASCII stand-in, so columns stay where they are.
ASCII_TERMS = re.compile(r"^(vt\d+.*|dumb|ansi)$")
_STAND_INS = {
    **dict.fromkeys("─━═┄┈╌", "-"),
    **dict.fromkeys("│┃║┆┊╎¦", "|"),
    **dict.fromkeys("┌┐└┘├┤┬┴┼╔╗╚╝╠╣╦╩╬╒╓╕╖╘╙╛╜╞╟╡╢╤╥╧╨╪╫╭╮╯╰┏┓┗┛", "+"),
    **dict.fromkeys("█▓▒▉▊▋▌▍▎▏▁▂▃▄▅▆▇▀▐", "#"),
    "░": ".",
    "·": "-",
    "•": "*",
    "°": "o",
    "±": "+",
    "×": "x",
    "÷": "/",
    "«": "<",
    "»": ">",
    "‹": "<",
    "›": ">",
    "←": "<",
    "→": ">",
    "↑": "^",
    "↓": "v",
    "…": ".",
    **dict.fromkeys("▼▾", "v"),
    **dict.fromkeys("▲▴", "^"),
    **dict.fromkeys("▶►▸", ">"),
    **dict.fromkeys("◀◄◂", "<"),
    "\u00a0": " ",
}
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def ascii_terminal(env: Mapping[str, str] | None = None) -> bool:
    """True for a terminal that draws ASCII only: TERM=vt100/vt220/..., dumb or ansi, or
    BOOTMEDIA_ASCII=1 (BOOTMEDIA_ASCII=0 turns it off for a vt100 that has UTF-8)."""
    if env is None:
        env = os.environ
    forced = env.get("BOOTMEDIA_ASCII", "")
    if forced in ("0", "1"):
        return forced == "1"
    return bool(ASCII_TERMS.match(env.get("TERM", "")))


@functools.lru_cache(maxsize=4096)
def _stand_in(ch: str) -> str:
    if ch in _STAND_INS:
        return _STAND_INS[ch]
    if unicodedata.combining(ch):
        return ""  # drawn on the cell before it
    base = unicodedata.normalize("NFKD", ch)[:1]
    cells = 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return base if base.isascii() and base.isprintable() and cells == 1 else "?" * cells


def to_ascii(text: str) -> str:
    """text with every non-ASCII character replaced by a stand-in of the same width."""
    if text.isascii():
        return text
    return _NON_ASCII.sub(lambda m: _stand_in(m.group()), text)


def ascii_driver(base: type[Any]) -> type[Any]:
    """A Textual driver class that sends only ASCII to the terminal (escape sequences are
    ASCII already; every drawn glyph goes through to_ascii)."""

    class AsciiDriver(base):
        def write(self, data: str) -> None:
            super().write(to_ascii(data))

    AsciiDriver.__name__ = f"Ascii{base.__name__}"
    return AsciiDriver
